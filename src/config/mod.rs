//! connector.yaml: the metamodel's streaming declaration and the connector's settings.
