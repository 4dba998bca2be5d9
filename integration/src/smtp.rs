//! A minimal SMTP sink on loopback for the alert tests: it speaks just enough SMTP (EHLO or
//! HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH) for a client to hand it mail,
//! and keeps every message it accepts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One message as accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM:<...>`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO:<...>`).
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, lines ending in CRLF.
    pub data: String,
}

impl ReceivedMail {
    /// The header `name` (case-insensitive), unfolded; the first if repeated.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\r\n\r\n")?;
        let mut unfolded: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match (line.starts_with([' ', '\t']), unfolded.last_mut()) {
                (true, Some(last)) => last.push_str(line),
                _ => unfolded.push(line.to_owned()),
            }
        }
        unfolded.into_iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The body: everything after the blank line that ends the header, as sent.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The body decoded after its `Content-Transfer-Encoding` (7bit, 8bit or
    /// quoted-printable; RFC 2045 6.7), lines ending in CRLF.
    pub fn decoded_body(&self) -> Result<String> {
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_else(|| "7bit".to_owned());
        match encoding.to_ascii_lowercase().as_str() {
            "7bit" | "8bit" => Ok(self.body().to_owned()),
            "quoted-printable" => decode_quoted_printable(self.body()),
            other => bail!("no decoder for Content-Transfer-Encoding {other}"),
        }
    }
}

/// Quoted-printable: `=XX` is a byte, `=` at a line's end joins it with the next line.
fn decode_quoted_printable(text: &str) -> Result<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line.trim_end_matches([' ', '\t']), false),
        };
        let mut rest = line.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            if byte == b'=' {
                let hex = tail
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .with_context(|| format!("bad quoted-printable escape in {line:?}"))?;
                bytes.push(hex);
                rest = &tail[2..];
            } else {
                bytes.push(byte);
                rest = tail;
            }
        }
        if !soft_break && lines.peek().is_some() {
            bytes.extend_from_slice(b"\r\n");
        }
    }
    String::from_utf8(bytes).context("quoted-printable body is not UTF-8")
}

#[derive(Default)]
struct Mailbox {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
}

/// A running SMTP sink; stops when dropped.
pub struct SmtpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    mailbox: Arc<Mailbox>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink on a free loopback port.
    pub async fn start() -> Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the smtp sink")?;
        let addr = listener.local_addr().context("smtp sink address")?;
        let mailbox = Arc::new(Mailbox::default());
        let shared = Arc::clone(&mailbox);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mailbox = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A client that goes away mid-session is no test failure.
                    let _ = session(stream, &mailbox).await;
                });
            }
        });
        Ok(SmtpSink {
            addr,
            mailbox,
            task,
        })
    }

    /// The messages accepted so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mailbox
            .mails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `count` messages were accepted, at most `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Result<Vec<ReceivedMail>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.mailbox.arrived.notified();
            let mails = self.mails();
            if mails.len() >= count {
                return Ok(mails);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!(
                    "{} mails after {limit:?}, expected {count}: {mails:?}",
                    mails.len()
                );
            }
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address inside `<...>` of a MAIL or RCPT argument.
fn angle_address(argument: &str) -> String {
    match (argument.find('<'), argument.find('>')) {
        (Some(start), Some(end)) if start < end => argument[start + 1..end].to_owned(),
        _ => argument.trim().to_owned(),
    }
}

/// One SMTP session, until QUIT or the client closes.
async fn session(stream: TcpStream, mailbox: &Mailbox) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 entity-cdc-test ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-entity-cdc-test\r\n250 8BITMIME\r\n",
            "HELO" => b"250 entity-cdc-test\r\n",
            "MAIL" => {
                mail_from = angle_address(command.get(4..).unwrap_or_default());
                rcpt_to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                rcpt_to.push(angle_address(command.get(4..).unwrap_or_default()));
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2).
                    data.push_str(text.strip_prefix('.').unwrap_or(text));
                    data.push_str("\r\n");
                }
                mailbox
                    .mails
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ReceivedMail {
                        mail_from: std::mem::take(&mut mail_from),
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data,
                    });
                mailbox.arrived.notify_waiters();
                b"250 OK queued\r\n"
            }
            "RSET" => {
                mail_from.clear();
                rcpt_to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
