//! A structure-aware model of a JSON-RPC body, written out by hand so that
//! it can carry what a JSON library would never emit: duplicate keys, case
//! variants of envelope keys, raw `\u` escapes (NUL, lone surrogates),
//! Unicode case-fold characters, deep nesting.

use arbitrary::Arbitrary;

/// Methods a policy routes on, and a few it does not.
const METHODS: [&str; 12] = [
    "tools/call",
    "prompts/get",
    "resources/read",
    "tools/list",
    "initialize",
    "notifications/initialized",
    "tasks/get",
    "tasks/cancel",
    "ping",
    "resources/subscribe",
    "notifications/cancelled",
    "completion/complete",
];

/// Names that fold onto, or hide, another name.
const NAMES: [&str; 10] = [
    "echo",
    "secret",
    "ſecret",
    "\u{212A}ill",
    "kill",
    "a\u{0}b",
    "file:///etc/passwd",
    "ECHO",
    "e\u{301}cho",
    "",
];

#[derive(Arbitrary, Debug)]
pub enum Doc {
    Single(Envelope),
    Batch(Vec<Envelope>),
}

#[derive(Arbitrary, Debug)]
pub struct Envelope {
    pub members: Vec<Member>,
}

#[derive(Arbitrary, Debug)]
pub enum Member {
    Jsonrpc(Spelling, Text),
    Id(Spelling, IdValue),
    Method(Spelling, Text),
    Params(Spelling, Vec<Param>),
    ParamsOther(Spelling, Json),
    Result(Spelling, Json),
    Error(Spelling, Json),
    Other(Text, Json),
}

#[derive(Arbitrary, Debug)]
pub enum Param {
    Name(Spelling, Text),
    Uri(Spelling, Text),
    Arguments(Spelling, Json),
    Meta(Spelling, Json),
    ProtocolVersion(Spelling, Text),
    TaskId(Spelling, Text),
    Other(Text, Json),
}

/// How a key is spelled.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Spelling {
    Exact,
    Upper,
    Capital,
    /// Every `s` as `ſ` (U+017F), which Go's case folding reads as `s`.
    LongS,
    /// Every `k` as the Kelvin sign.
    Kelvin,
    /// The first character as a `\u` escape.
    Escaped,
    TrailingNul,
}

#[derive(Arbitrary, Debug)]
pub enum IdValue {
    Int(i64),
    Big(u128),
    Float(f32),
    Str(Text),
    Null,
    Other(Json),
}

/// A string value.
#[derive(Arbitrary, Debug)]
pub enum Text {
    Method(u8),
    Name(u8),
    Free(String),
    /// `\uXXXX` written raw, inside a listed method or name.
    Escape(u8, u16, u8),
    Mutated(u8, Spelling),
}

#[derive(Arbitrary, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    Array(Vec<Json>),
    Object(Vec<(Text, Json)>),
    /// `n` levels of `[` or `{"a":` around a value.
    Deep(u8, bool, Box<Json>),
    Raw(String),
}

impl Doc {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Doc::Single(e) => e.write(&mut out),
            Doc::Batch(es) => {
                out.push('[');
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    e.write(&mut out);
                }
                out.push(']');
            }
        }
        out.into_bytes()
    }
}

impl Envelope {
    fn write(&self, out: &mut String) {
        out.push('{');
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            m.write(out);
        }
        out.push('}');
    }
}

fn key(out: &mut String, name: &str, s: Spelling) {
    out.push('"');
    let spelled: String = match s {
        Spelling::Exact => name.into(),
        Spelling::Upper => name.to_uppercase(),
        Spelling::Capital => {
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
        Spelling::LongS => name.replace('s', "ſ"),
        Spelling::Kelvin => name.replace('k', "\u{212A}"),
        Spelling::Escaped => {
            let mut c = name.chars();
            match c.next() {
                Some(f) => format!("\\u{:04x}{}", f as u32, c.as_str()),
                None => String::new(),
            }
        }
        Spelling::TrailingNul => format!("{name}\\u0000"),
    };
    // Spelled keys are written raw: an escape in them is meant.
    out.push_str(&spelled);
    out.push_str("\":");
}

impl Member {
    fn write(&self, out: &mut String) {
        match self {
            Member::Jsonrpc(s, t) => {
                key(out, "jsonrpc", *s);
                t.write(out)
            }
            Member::Id(s, v) => {
                key(out, "id", *s);
                v.write(out)
            }
            Member::Method(s, t) => {
                key(out, "method", *s);
                t.write(out)
            }
            Member::Params(s, ps) => {
                key(out, "params", *s);
                out.push('{');
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    p.write(out);
                }
                out.push('}');
            }
            Member::ParamsOther(s, j) => {
                key(out, "params", *s);
                j.write(out, 0)
            }
            Member::Result(s, j) => {
                key(out, "result", *s);
                j.write(out, 0)
            }
            Member::Error(s, j) => {
                key(out, "error", *s);
                j.write(out, 0)
            }
            Member::Other(k, j) => {
                k.write(out);
                out.push(':');
                j.write(out, 0)
            }
        }
    }
}

impl Param {
    fn write(&self, out: &mut String) {
        let (k, s) = match self {
            Param::Name(s, _) => ("name", s),
            Param::Uri(s, _) => ("uri", s),
            Param::Arguments(s, _) => ("arguments", s),
            Param::Meta(s, _) => ("_meta", s),
            Param::ProtocolVersion(s, _) => ("protocolVersion", s),
            Param::TaskId(s, _) => ("taskId", s),
            Param::Other(k, j) => {
                k.write(out);
                out.push(':');
                return j.write(out, 0);
            }
        };
        key(out, k, *s);
        match self {
            Param::Name(_, t) | Param::Uri(_, t) | Param::TaskId(_, t) => t.write(out),
            Param::ProtocolVersion(_, t) => t.write(out),
            Param::Arguments(_, j) | Param::Meta(_, j) => j.write(out, 0),
            Param::Other(..) => {}
        }
    }
}

impl IdValue {
    fn write(&self, out: &mut String) {
        match self {
            IdValue::Int(i) => out.push_str(&i.to_string()),
            IdValue::Big(b) => out.push_str(&b.to_string()),
            IdValue::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
            IdValue::Float(_) => out.push('0'),
            IdValue::Str(t) => t.write(out),
            IdValue::Null => out.push_str("null"),
            IdValue::Other(j) => j.write(out, 0),
        }
    }
}

/// A JSON string literal for `s`, escaping only what JSON requires.
fn literal(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

impl Text {
    fn write(&self, out: &mut String) {
        match self {
            Text::Method(i) => literal(out, pick(&METHODS, *i)),
            Text::Name(i) => literal(out, pick(&NAMES, *i)),
            Text::Free(s) => literal(out, s),
            Text::Escape(i, unit, at) => {
                let base = pick(&METHODS, *i);
                let cut = (usize::from(*at) % (base.len() + 1)).min(base.len());
                out.push('"');
                out.push_str(&base[..cut]);
                out.push_str(&format!("\\u{unit:04x}"));
                out.push_str(&base[cut..]);
                out.push('"');
            }
            Text::Mutated(i, s) => {
                // A method spelled like a key variant: `Tools/call`, `toolſ/call`.
                let mut tmp = String::new();
                key(&mut tmp, pick(&METHODS, *i), *s);
                out.push_str(tmp.trim_end_matches(':'));
            }
        }
    }
}

impl Json {
    fn write(&self, out: &mut String, depth: usize) {
        // Bounded so that a generated document stays small.
        if depth > 40 {
            out.push_str("null");
            return;
        }
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
            Json::Float(_) => out.push_str("1e400"),
            Json::Str(t) => t.write(out),
            Json::Array(items) => {
                out.push('[');
                for (i, j) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    j.write(out, depth + 1);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (k, j)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.write(out);
                    out.push(':');
                    j.write(out, depth + 1);
                }
                out.push('}');
            }
            Json::Deep(n, array, inner) => {
                let n = usize::from(*n);
                for _ in 0..n {
                    out.push_str(if *array { "[" } else { "{\"a\":" });
                }
                inner.write(out, depth + 1);
                for _ in 0..n {
                    out.push(if *array { ']' } else { '}' });
                }
            }
            Json::Raw(s) => out.push_str(s),
        }
    }
}
