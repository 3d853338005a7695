//! Cuts and limits counted as AD counts them, in UTF-16 code units: names mixing BMP and non-BMP
//! characters at every cut point of the stdlib and of the default rules. The expected cuts come
//! from a reference written here with `encode_utf16`, independent of the host's primitives.

use serde_json::{json, Value};

use super::support::*;
use crate::rules::{output, DesiredGroup, RuleSet};

/// Non-BMP (2 units each), CJK and Latin (1), a letter with a combining mark (2 characters).
const PIECES: [&str; 5] = ["😀", "𝔸", "東", "e\u{301}", "ä"];

/// Every cut the stdlib and the default rules make: the id suffixes (8, 12), sAMAccountName
/// (20, and 11 before `_<8 hex digits>`), the cn's display name part (51), the cn itself (64),
/// and the descriptions (448 for security groups, 1024 for Microsoft 365 groups).
const CUTS: [usize; 9] = [8, 11, 12, 19, 20, 51, 64, 448, 1024];

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Texts that run past `n` units with a two-unit character at and around unit `n`: each piece
/// repeated after 0-3 ASCII letters (so the cut meets it at both parities), and all pieces
/// interleaved from each starting piece.
fn texts_around(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let grow = |mut s: String, next: &mut dyn FnMut() -> &'static str| {
        while units(&s) <= n + 3 {
            s.push_str(next());
        }
        s
    };
    for piece in PIECES {
        for pad in 0..4 {
            out.push(grow("x".repeat(pad), &mut || piece));
        }
    }
    for shift in 0..PIECES.len() {
        let mut i = shift;
        out.push(grow(String::new(), &mut || {
            i += 1;
            PIECES[(i - 1) % PIECES.len()]
        }));
    }
    out
}

/// The most characters from the start that fit in `n` units.
fn reference_left(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    (0..=chars.len())
        .rev()
        .map(|k| chars[..k].iter().collect::<String>())
        .find(|p| units(p) <= n)
        .unwrap_or_default()
}

/// The most characters from the end that fit in `n` units.
fn reference_right(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    (0..=chars.len())
        .map(|k| chars[k..].iter().collect::<String>())
        .find(|p| units(p) <= n)
        .unwrap_or_default()
}

/// Microsoft's `Mid` without halves: the characters wholly inside units
/// `start - 1 .. start - 1 + n`.
fn reference_mid(s: &str, start: usize, n: usize) -> String {
    let mut at = 0;
    let mut out = String::new();
    for c in s.chars() {
        let w = c.len_utf16();
        if at + 1 >= start && at + w < start + n {
            out.push(c);
        }
        at += w;
    }
    out
}

/// `got` is the expected cut, fits in `max` units and is whole UTF-16 (no lone surrogate, no
/// replacement character from a lossy conversion).
fn assert_cut(what: &str, got: &str, want: &str, max: usize) {
    assert_eq!(got, want, "{what}");
    assert!(units(got) <= max, "{what}: {got:?} is {} units", units(got));
    let utf16: Vec<u16> = got.encode_utf16().collect();
    assert_eq!(
        String::from_utf16(&utf16).ok().as_deref(),
        Some(got),
        "{what}: {got:?}"
    );
    assert!(!got.contains('\u{fffd}'), "{what}: {got:?}");
}

/// An attribute's only value, "" when the rule returned nothing (empty strings are dropped).
fn text(g: &DesiredGroup, attr: &str) -> String {
    match g.attributes.get(attr).or_else(|| g.on_create.get(attr)) {
        Some(Some(v)) => v.join("|"),
        Some(None) => String::new(),
        None => panic!("attribute {attr} not returned; got {:?}", g.attributes),
    }
}

const PROBE: &str = r#"
import "std/naming" as naming;
fn scope(group) { true }
fn map(group) {
    let n = group.n;
    #{
        parent: "OU=T,DC=x",
        cn: "t",
        attributes: #{
            left: naming::left(group.text, n),
            truncate: naming::truncate(group.text, n),
            last: naming::last(group.text, n),
            mid: naming::mid(group.text, group.start, n),
            samFrom: naming::sam_from(group.text, group.suffix),
            shortId: naming::short_id(group, n),
            units: utf16_len(group.text),
        },
    }
}
"#;

fn probe() -> (tempfile::TempDir, RuleSet) {
    let dir = rules_dir(&[("10-probe.rhai", PROBE)]);
    let set = load(dir.path()).unwrap_or_else(|e| panic!("probe loads: {e}"));
    (dir, set)
}

fn run_probe(set: &RuleSet, group: Value) -> DesiredGroup {
    desired(
        set.evaluate(&group)
            .unwrap_or_else(|e| panic!("{group}: {e}")),
    )
}

#[test]
fn naming_cuts_count_utf16_units_at_every_cut_point() {
    let (_dir, set) = probe();
    for n in CUTS {
        for t in texts_around(n) {
            let g = run_probe(
                &set,
                json!({"id": t.clone(), "text": t, "n": n, "start": 1, "suffix": ""}),
            );
            let want = reference_left(&t, n);
            // Every text runs past the cut, so the cut keeps n or n - 1 units.
            assert!(units(&want) + 1 >= n, "{n}: {t:?}");
            assert_cut(&format!("left {n} {t:?}"), &text(&g, "left"), &want, n);
            assert_cut(
                &format!("truncate {n} {t:?}"),
                &text(&g, "truncate"),
                &want,
                n,
            );
            let right = reference_right(&t, n);
            assert_cut(&format!("last {n} {t:?}"), &text(&g, "last"), &right, n);
            assert_eq!(text(&g, "units"), units(&t).to_string(), "{t:?}");
            // short_id takes the id's last n units (hyphens removed, lower case).
            assert_cut(
                &format!("short_id {n} {t:?}"),
                &text(&g, "shortId"),
                &reference_right(&t.to_lowercase(), n),
                n,
            );
            for start in 1..=4 {
                let g = run_probe(
                    &set,
                    json!({"id": "i", "text": t, "n": n, "start": start, "suffix": ""}),
                );
                assert_cut(
                    &format!("mid {start} {n} {t:?}"),
                    &text(&g, "mid"),
                    &reference_mid(&t, start, n),
                    n,
                );
            }
        }
    }
}

#[test]
fn sam_from_fits_20_utf16_units_with_any_suffix() {
    let (_dir, set) = probe();
    for suffix in ["", "56789abc", "😀😀", "𝔸", "東京"] {
        let room = if suffix.is_empty() {
            20
        } else {
            20 - 1 - units(suffix)
        };
        for t in texts_around(room) {
            let g = run_probe(
                &set,
                json!({"id": "i", "text": t, "n": 1, "start": 1, "suffix": suffix}),
            );
            let base = reference_left(&t, room);
            let want = if suffix.is_empty() {
                base
            } else {
                format!("{base}_{suffix}")
            };
            assert_cut(
                &format!("sam_from({t:?}, {suffix:?})"),
                &text(&g, "samFrom"),
                &want,
                20,
            );
        }
    }
}

/// The default rules' names and descriptions at their cut points; every result also passes the
/// host's own check of AD's limits.
#[test]
fn default_rules_cut_names_and_descriptions_to_fit_ad() {
    let set = shipped();
    let fits_ad = |g: &DesiredGroup| {
        assert_eq!(output::over_known_limits(g), vec![], "{g:?}");
    };
    for name in texts_around(51).into_iter().chain(texts_around(11)) {
        let g = desired(
            set.evaluate(&with(m365_group(), json!({"displayName": name})))
                .expect("m365 evaluates"),
        );
        let cn = format!("{}_4244bc7e0938", reference_left(&name, 51));
        assert_cut(&format!("m365 cn {name:?}"), &g.cn, &cn, 64);
        let sam = format!("{}_bc7e0938", reference_left(&name, 11));
        assert_cut(
            &format!("sAMAccountName {name:?}"),
            &text(&g, "sAMAccountName"),
            &sam,
            20,
        );
        fits_ad(&g);

        let g = desired(
            set.evaluate(&with(security_group(), json!({"displayName": name})))
                .expect("security evaluates"),
        );
        let cn = format!("{}_517f54645106", reference_left(&name, 51));
        assert_cut(&format!("security cn {name:?}"), &g.cn, &cn, 64);
        fits_ad(&g);
    }
    for (base, max) in [(m365_group(), 1024), (security_group(), 448)] {
        for description in texts_around(max) {
            let g = desired(
                set.evaluate(&with(base.clone(), json!({"description": description})))
                    .expect("evaluates"),
            );
            assert_cut(
                &format!("{} description", g.rule),
                &text(&g, "description"),
                &reference_left(&description, max),
                max,
            );
            fits_ad(&g);
        }
    }
}

#[test]
fn the_reference_cuts_agree_with_hand_made_cases() {
    // The references above decide what the sweeps expect: check them on known answers.
    assert_eq!(reference_left("a😀b", 2), "a");
    assert_eq!(reference_left("a😀b", 3), "a😀");
    assert_eq!(reference_right("a😀b", 2), "b");
    assert_eq!(reference_right("a😀b", 3), "😀b");
    assert_eq!(reference_mid("a😀b", 1, 2), "a");
    assert_eq!(reference_mid("a😀b", 2, 2), "😀");
    assert_eq!(reference_mid("a😀b", 3, 2), "b");
    assert_eq!(reference_mid("abcdef", 2, 3), "bcd");
    let texts = texts_around(11);
    assert!(texts.iter().all(|t| units(t) > 11));
    assert!(texts.contains(&"x😀😀😀😀😀😀😀".to_string()), "{texts:?}");
}

#[test]
fn unit_primitives_take_any_value_and_treat_negative_counts_as_zero() {
    let rule = r#"
fn scope(group) { true }
fn map(group) {
    #{
        parent: "OU=T,DC=x",
        cn: "t",
        attributes: #{
            a: first_units((), 3),
            b: first_units("abc", -1),
            c: last_units(12345, 2),
            d: mid_units("a😀b", 1, 2),
            e: mid_units("a😀b", -5, 1),
            f: utf16_len(()),
            g: utf16_len("a😀東"),
            h: first_units("ab😀", 3) + "|" + last_units("😀ab", 3),
        },
    }
}
"#;
    let dir = rules_dir(&[("10-p.rhai", rule)]);
    let set = load(dir.path()).unwrap_or_else(|e| panic!("loads: {e}"));
    let g = desired(set.evaluate(&json!({"id": "i"})).expect("evaluates"));
    for (attr, want) in [
        ("a", ""),
        ("b", ""),
        ("c", "45"),
        ("d", "😀"),
        ("e", "a"),
        ("f", "0"),
        ("g", "4"),
        ("h", "ab|ab"),
    ] {
        assert_eq!(text(&g, attr), want, "{attr}");
    }
}
