//! `pvabi bench --json` on a real `/dev/kvm`, with a handful of iterations: the output is
//! JSON with the expected keys (the SMP object included) and sensible (positive) numbers.
//! No timing is asserted.

use std::collections::BTreeMap;
use std::process::Command;

use pvabi_host::vm::testing::kvm_or_skip;

/// A JSON value (enough of JSON for the bench's output).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("missing key `{key}` in {self:?}")),
            other => panic!("`{key}` looked up in a non-object {other:?}"),
        }
    }

    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("expected a number, found {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("expected an array, found {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("expected a string, found {other:?}"),
        }
    }
}

/// A strict little JSON parser: the whole input must be one value.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing input at byte {}", p.i));
        }
        Ok(v)
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value()? else {
                        return Err(format!("object key expected at byte {}", self.i));
                    };
                    self.eat(b':')?;
                    let v = self.value()?;
                    if m.insert(k.clone(), v).is_some() {
                        return Err(format!("duplicate key `{k}`"));
                    }
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("`,` or `}}` expected at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return Err(format!("`,` or `]` expected at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Err("unterminated string".into()),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Json::Str(out));
                        }
                        Some(b'\\') => {
                            let esc = *self.s.get(self.i + 1).ok_or("bad escape")?;
                            self.i += 2;
                            match esc {
                                b'"' => out.push('"'),
                                b'\\' => out.push('\\'),
                                b'/' => out.push('/'),
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                b'u' => {
                                    let hex = std::str::from_utf8(
                                        self.s.get(self.i..self.i + 4).ok_or("bad \\u")?,
                                    )
                                    .map_err(|e| e.to_string())?;
                                    let code =
                                        u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                                    out.push(char::from_u32(code).ok_or("bad code point")?);
                                    self.i += 4;
                                }
                                other => return Err(format!("bad escape `\\{}`", other as char)),
                            }
                        }
                        Some(&c) if c < 0x20 => return Err("control character in string".into()),
                        Some(_) => {
                            let rest = std::str::from_utf8(&self.s[self.i..])
                                .map_err(|e| e.to_string())?;
                            let c = rest.chars().next().ok_or("empty")?;
                            out.push(c);
                            self.i += c.len_utf8();
                        }
                    }
                }
            }
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                text.parse()
                    .map(Json::Num)
                    .map_err(|e| format!("bad number `{text}`: {e}"))
            }
            _ => Err(format!("unexpected input at byte {}", self.i)),
        }
    }
}

#[test]
fn json_parser_self_check() {
    let v = Parser::parse(r#" {"a": [1, -2.5e3, "x\"y", null, true, {}], "b": {"c": false}} "#)
        .unwrap();
    assert_eq!(v.get("a").arr()[1].num(), -2500.0);
    assert_eq!(v.get("a").arr()[2].str(), "x\"y");
    assert!(Parser::parse("{\"a\": 1,}").is_err());
    assert!(Parser::parse("{\"a\": 1} x").is_err());
}

#[test]
fn bench_json_has_the_expected_keys_and_positive_numbers() {
    if !kvm_or_skip("bench_json_has_the_expected_keys_and_positive_numbers") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .args(["bench", "--iterations", "64", "--rounds", "1", "--json"])
        .output()
        .expect("runs pvabi");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pvabi bench failed ({:?})\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    // Progress goes to stderr, the JSON alone to stdout.
    assert!(stderr.contains("round 1/1"), "progress on stderr: {stderr}");
    let json = Parser::parse(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));

    assert_eq!(json.get("iterations").num(), 64.0);
    assert_eq!(json.get("rounds").num(), 1.0);
    assert!(json.get("total_seconds").num() > 0.0);
    // 64 measured + 32 warm-up operations in each of the five PTE phases.
    assert!(json.get("host_pte_writes").num() >= 5.0 * 96.0, "{stdout}");

    let exit_cost = json.get("exit_cost").arr();
    let cpls: Vec<f64> = exit_cost.iter().map(|e| e.get("cpl").num()).collect();
    assert_eq!(cpls, [0.0, 3.0]);
    for e in exit_cost {
        for key in [
            "bare_out_ns",
            "pvabi_call_ns",
            "regs_out_ns",
            "ratio",
            "handler_bare_ns",
            "handler_call_ns",
        ] {
            assert!(e.get(key).num() > 0.0, "exit_cost {key}: {e:?}");
        }
        // A difference of two noisy figures: any sign, but a number.
        e.get("dispatch_overhead_ns").num();
        e.get("handler_dispatch_ns").num();
    }

    let batching = json.get("batching").arr();
    let modes: Vec<&str> = batching.iter().map(|b| b.get("mode").str()).collect();
    assert_eq!(
        modes,
        [
            "direct",
            "multicall",
            "deferred",
            "ring_doorbell",
            "ring_host_polled"
        ]
    );
    for b in batching {
        assert_eq!(b.get("cpl").num(), 3.0);
        assert!(b.get("ns_per_op").num() > 0.0, "{b:?}");
        assert!(b.get("exits_per_op").num() >= 0.0, "{b:?}");
        assert!(b.get("speedup_vs_direct").num() > 0.0, "{b:?}");
        // null when a mode needed no exit at all.
        match b.get("exit_reduction_vs_direct") {
            Json::Null => {}
            v => assert!(v.num() > 0.0, "{b:?}"),
        }
    }
    let direct = &batching[0];
    assert_eq!(
        direct.get("exits_per_op").num(),
        1.0,
        "one exit per direct call"
    );
    for b in &batching[1..4] {
        assert!(
            b.get("exits_per_op").num() < 0.1,
            "a batched mode needs far fewer exits: {b:?}"
        );
    }

    // The SMP scenario: GET_SPEC_VERSION at CPL3 from vCPU 0 alone and from vCPUs 0 and 1
    // at once. Rates and their ratio are finite and positive; no timing is asserted.
    let smp = json.get("smp");
    assert_eq!(smp.get("vcpus").num(), 2.0, "{smp:?}");
    assert_eq!(smp.get("cpl").num(), 3.0, "{smp:?}");
    assert_eq!(smp.get("call").str(), "GET_SPEC_VERSION");
    for key in ["smp_1_calls_per_s", "smp_2_calls_per_s", "smp_scaling"] {
        let v = smp.get(key).num();
        assert!(v.is_finite() && v > 0.0, "smp {key} = {v}: {smp:?}");
    }
    let smp_phases = smp.get("phases").arr();
    let names: Vec<&str> = smp_phases.iter().map(|p| p.get("name").str()).collect();
    assert_eq!(names, ["smp_1", "smp_2"]);
    for (p, calls_per_vcpu_round) in smp_phases.iter().zip([64.0, 128.0]) {
        assert_eq!(p.get("cpl").num(), 3.0, "{p:?}");
        assert!(p.get("ns_per_op").num() > 0.0, "{p:?}");
        assert!(p.get("tsc_per_op").num() > 0.0, "{p:?}");
        let samples = p.get("samples").arr();
        assert_eq!(samples.len(), 1);
        let (ops, exits) = (samples[0].get("ops").num(), samples[0].get("exits").num());
        assert_eq!(ops, calls_per_vcpu_round, "{p:?}");
        assert!(samples[0].get("ns").num() > 0.0);
        // One doorbell exit per call, from whichever vCPU (the marks are not counted). In
        // smp_2 vCPU 1 is in ring 3 from before the start mark until after the end mark; in
        // smp_1 its VCPU_HALT, entered just before, may still fall into a chunk (at most one
        // per chunk, 8 chunks) on a loaded host.
        if p.get("name").str() == "smp_2" {
            assert_eq!(exits, ops, "{p:?}");
        } else {
            assert!(exits >= ops && exits <= ops + 8.0, "{p:?}");
        }
    }
    assert!(
        stderr.contains("round 1/1: smp_2"),
        "progress for the SMP phases: {stderr}"
    );

    let phases = json.get("phases").arr();
    assert_eq!(phases.len(), 11);
    for p in phases {
        assert!(!p.get("name").str().is_empty());
        assert!(!p.get("what").str().is_empty());
        assert!(p.get("ns_per_op").num() > 0.0, "{p:?}");
        assert!(p.get("tsc_per_op").num() > 0.0, "{p:?}");
        assert!(p.get("exits_per_op").num() >= 0.0, "{p:?}");
        p.get("handler_ns_per_op").num();
        let samples = p.get("samples").arr();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].get("ops").num(), 64.0, "{p:?}");
        assert!(samples[0].get("ns").num() > 0.0);
    }
}
