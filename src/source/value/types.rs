//! PostgreSQL column types as far as value decoding needs them: built-in types by OID, the
//! numeric typmod, and the type names used in errors and schemas.

/// The type of a column, resolved from its OID and typmod (and, for user-defined types, from
/// the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// `bool`.
    Bool,
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `oid`.
    Oid,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric`, with the precision and scale of its typmod; both `None` when unconstrained.
    Numeric {
        /// Declared precision (total significant digits).
        precision: Option<u16>,
        /// Declared scale; PostgreSQL 15 allows it to be negative or greater than the precision.
        scale: Option<i16>,
    },
    /// `text`.
    Text,
    /// `varchar`.
    Varchar,
    /// `bpchar` (`char(n)`): trailing padding is part of the value.
    Bpchar,
    /// `name`.
    Name,
    /// `"char"`: the one-byte internal type.
    Char,
    /// `uuid`.
    Uuid,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timetz`.
    TimeTz,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `interval`.
    Interval,
    /// `json`: kept verbatim.
    Json,
    /// `jsonb`: kept as PostgreSQL's canonical text.
    Jsonb,
    /// `bytea`.
    Bytea,
    /// A user-defined enum; values are its labels.
    Enum {
        /// The enum's type name.
        name: String,
        /// Its labels in `enumsortorder` order, as the catalog had them when the type was
        /// resolved (the Avro schema lists them as metadata, CASE-10).
        labels: Vec<String>,
    },
    /// An array; PostgreSQL does not enforce the declared number of dimensions.
    Array {
        /// The element type.
        element: Box<PgType>,
        /// `pg_type.typdelim` of the element type: `,` for nearly all, `;` for `box`.
        delimiter: u8,
    },
    /// A domain, decoded as its base type.
    Domain {
        /// The domain's type name.
        name: String,
        /// The base type, with the domain's typmod applied.
        base: Box<PgType>,
    },
    /// Any other type: its values are kept as PostgreSQL's text with the type name.
    Other {
        /// The type name.
        name: String,
    },
}

/// Well-known built-in types that have no dedicated decoding: (oid, array oid, name, delimiter).
/// Listing them saves a catalog query and gets `box`'s `;` delimiter right without one.
const OTHER_BUILTINS: &[(u32, u32, &str, u8)] = &[
    (142, 143, "xml", b','),
    (600, 1017, "point", b','),
    (601, 1018, "lseg", b','),
    (602, 1019, "path", b','),
    (603, 1020, "box", b';'),
    (604, 1027, "polygon", b','),
    (628, 629, "line", b','),
    (650, 651, "cidr", b','),
    (718, 719, "circle", b','),
    (774, 775, "macaddr8", b','),
    (790, 791, "money", b','),
    (829, 1040, "macaddr", b','),
    (869, 1041, "inet", b','),
    (1560, 1561, "bit", b','),
    (1562, 1563, "varbit", b','),
    (3220, 3221, "pg_lsn", b','),
    (3614, 3643, "tsvector", b','),
    (3615, 3645, "tsquery", b','),
    (4072, 4073, "jsonpath", b','),
];

impl PgType {
    /// The built-in scalar type with this OID, or the array type whose element is one.
    ///
    /// `typmod` is the column's `atttypmod`: it only matters for `numeric` (and `numeric[]`),
    /// whose precision and scale it carries. Returns `None` for OIDs that are not built in
    /// (enums, domains, composites, extension types): the caller then asks the catalog.
    pub fn builtin(oid: u32, typmod: i32) -> Option<PgType> {
        if let Some(scalar) = Self::builtin_scalar(oid, typmod) {
            return Some(scalar);
        }
        let element_oid = match oid {
            1000 => 16,
            1001 => 17,
            1002 => 18,
            1003 => 19,
            1005 => 21,
            1007 => 23,
            1016 => 20,
            1028 => 26,
            1021 => 700,
            1022 => 701,
            1231 => 1700,
            1009 => 25,
            1015 => 1043,
            1014 => 1042,
            2951 => 2950,
            1182 => 1082,
            1183 => 1083,
            1270 => 1266,
            1115 => 1114,
            1185 => 1184,
            1187 => 1186,
            199 => 114,
            3807 => 3802,
            _ => {
                let &(_, _, name, delimiter) =
                    OTHER_BUILTINS.iter().find(|entry| entry.1 == oid)?;
                return Some(PgType::Array {
                    element: Box::new(PgType::Other {
                        name: name.to_owned(),
                    }),
                    delimiter,
                });
            }
        };
        let element = Self::builtin_scalar(element_oid, typmod)?;
        Some(PgType::Array {
            element: Box::new(element),
            delimiter: b',',
        })
    }

    /// The built-in scalar types, without arrays.
    fn builtin_scalar(oid: u32, typmod: i32) -> Option<PgType> {
        let ty = match oid {
            16 => PgType::Bool,
            21 => PgType::Int2,
            23 => PgType::Int4,
            20 => PgType::Int8,
            26 => PgType::Oid,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1700 => Self::numeric(typmod),
            25 => PgType::Text,
            1043 => PgType::Varchar,
            1042 => PgType::Bpchar,
            19 => PgType::Name,
            18 => PgType::Char,
            2950 => PgType::Uuid,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1266 => PgType::TimeTz,
            1114 => PgType::Timestamp,
            1184 => PgType::TimestampTz,
            1186 => PgType::Interval,
            114 => PgType::Json,
            3802 => PgType::Jsonb,
            17 => PgType::Bytea,
            _ => {
                let &(_, _, name, _) = OTHER_BUILTINS.iter().find(|entry| entry.0 == oid)?;
                PgType::Other {
                    name: name.to_owned(),
                }
            }
        };
        Some(ty)
    }

    /// `numeric` with the precision and scale decoded from its typmod.
    ///
    /// The typmod is `((p << 16) | (s & 0x7FF)) + 4`; the scale is a signed 11-bit field since
    /// PostgreSQL 15 (negative scales and scales above the precision). A typmod below 4
    /// (normally -1) means unconstrained.
    pub fn numeric(typmod: i32) -> PgType {
        if typmod < 4 {
            return PgType::Numeric {
                precision: None,
                scale: None,
            };
        }
        let packed = typmod - 4;
        // Masked to 16 and 11 bits, so both conversions are lossless.
        let precision = ((packed >> 16) & 0xFFFF) as u16;
        let scale = (((packed & 0x7FF) ^ 1024) - 1024) as i16;
        PgType::Numeric {
            precision: Some(precision),
            scale: Some(scale),
        }
    }

    /// The type's name as used in errors and schema documentation: PostgreSQL's internal
    /// names (`int4`, `numeric(10,2)`, `int4[]`), or the user type's name.
    pub fn name(&self) -> String {
        match self {
            PgType::Bool => "bool".to_owned(),
            PgType::Int2 => "int2".to_owned(),
            PgType::Int4 => "int4".to_owned(),
            PgType::Int8 => "int8".to_owned(),
            PgType::Oid => "oid".to_owned(),
            PgType::Float4 => "float4".to_owned(),
            PgType::Float8 => "float8".to_owned(),
            PgType::Numeric {
                precision: Some(precision),
                scale: Some(scale),
            } => format!("numeric({precision},{scale})"),
            PgType::Numeric { .. } => "numeric".to_owned(),
            PgType::Text => "text".to_owned(),
            PgType::Varchar => "varchar".to_owned(),
            PgType::Bpchar => "bpchar".to_owned(),
            PgType::Name => "name".to_owned(),
            PgType::Char => "char".to_owned(),
            PgType::Uuid => "uuid".to_owned(),
            PgType::Date => "date".to_owned(),
            PgType::Time => "time".to_owned(),
            PgType::TimeTz => "timetz".to_owned(),
            PgType::Timestamp => "timestamp".to_owned(),
            PgType::TimestampTz => "timestamptz".to_owned(),
            PgType::Interval => "interval".to_owned(),
            PgType::Json => "json".to_owned(),
            PgType::Jsonb => "jsonb".to_owned(),
            PgType::Bytea => "bytea".to_owned(),
            PgType::Enum { name, .. } | PgType::Domain { name, .. } | PgType::Other { name } => {
                name.clone()
            }
            PgType::Array { element, .. } => format!("{}[]", element.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_02_numeric_typmods_decode_with_signed_scale() {
        assert_eq!(
            PgType::builtin(1700, 3932174),
            Some(PgType::Numeric {
                precision: Some(60),
                scale: Some(10)
            })
        );
        assert_eq!(
            PgType::builtin(1700, 329730),
            Some(PgType::Numeric {
                precision: Some(5),
                scale: Some(-2)
            })
        );
        assert_eq!(
            PgType::builtin(1700, 196617),
            Some(PgType::Numeric {
                precision: Some(3),
                scale: Some(5)
            })
        );
        assert_eq!(
            PgType::builtin(1700, -1),
            Some(PgType::Numeric {
                precision: None,
                scale: None
            })
        );
        assert_eq!(PgType::numeric(3932174).name(), "numeric(60,10)");
        assert_eq!(PgType::numeric(329730).name(), "numeric(5,-2)");
        assert_eq!(PgType::numeric(196617).name(), "numeric(3,5)");
        assert_eq!(PgType::numeric(-1).name(), "numeric");
    }

    #[test]
    fn case_10_domain_numeric_typmod_from_catalog() {
        // pg_type.typtypmod of `numeric(8,2)` is 524294.
        assert_eq!(PgType::numeric(524294).name(), "numeric(8,2)");
    }

    #[test]
    fn builtin_arrays_carry_their_element_and_delimiter() {
        assert_eq!(
            PgType::builtin(1007, -1).map(|t| t.name()).as_deref(),
            Some("int4[]")
        );
        assert_eq!(
            PgType::builtin(1231, 655366).map(|t| t.name()).as_deref(),
            Some("numeric(10,2)[]")
        );
        assert_eq!(
            PgType::builtin(1020, -1),
            Some(PgType::Array {
                element: Box::new(PgType::Other {
                    name: "box".to_owned()
                }),
                delimiter: b';'
            })
        );
        for (oid, name) in [
            (1000, "bool[]"),
            (1001, "bytea[]"),
            (1003, "name[]"),
            (1005, "int2[]"),
            (1009, "text[]"),
            (1014, "bpchar[]"),
            (1015, "varchar[]"),
            (1016, "int8[]"),
            (1021, "float4[]"),
            (1022, "float8[]"),
            (1028, "oid[]"),
            (1115, "timestamp[]"),
            (1182, "date[]"),
            (1183, "time[]"),
            (1185, "timestamptz[]"),
            (1187, "interval[]"),
            (1270, "timetz[]"),
            (199, "json[]"),
            (2951, "uuid[]"),
            (3807, "jsonb[]"),
        ] {
            assert_eq!(
                PgType::builtin(oid, -1).map(|t| t.name()).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn unknown_oids_are_left_to_the_catalog() {
        assert_eq!(PgType::builtin(16384, -1), None);
        assert_eq!(PgType::builtin(0, -1), None);
    }
}
