//! The REST edge's form parsing (`server/src/http/form.rs`): a query and a body, split
//! at the first NUL of the input, read by every getter the routes use. No panic; an
//! error names its parameter; an integer that parses is the decimal text it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline_server::http::form::Params;

const NAMES: &[&str] = &[
    "Data",
    "Ttl",
    "ItemTtl",
    "CollectionTtl",
    "PageSize",
    "Page",
    "PageToken",
    "From",
    "Bounds",
    "Order",
    "Key",
    "UniqueName",
    "AclEnabled",
    "Read",
    "Write",
    "Manage",
    "FriendlyName",
    "WebhookUrl",
    "ReachabilityDebouncingWindow",
    "",
];

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let p = Params::parse(&[query, body]);
    for (name, value) in &p.pairs {
        // A repeated name keeps its last value.
        let last = p
            .pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v);
        assert_eq!(p.string(name), last.map(String::as_str));
        let _ = value;
    }
    for name in NAMES
        .iter()
        .copied()
        .chain(p.pairs.iter().map(|(n, _)| n.as_str()))
    {
        let _ = p.string(name);
        if let Err(e) = p.required(name) {
            assert!(e.message.contains(name));
        }
        match p.boolean(name) {
            Ok(Some(b)) => assert!(p.string(name).unwrap().eq_ignore_ascii_case(&b.to_string())),
            Ok(None) => assert!(p.string(name).is_none()),
            Err(e) => assert!(e.message.contains(name)),
        }
        let _ = p.required_boolean(name);
        match p.integer(name) {
            Ok(Some(n)) => assert_eq!(p.string(name).unwrap().trim().parse::<u64>().ok(), Some(n)),
            Ok(None) => assert!(p.string(name).is_none()),
            Err(e) => assert!(e.message.contains(name)),
        }
    }
    let _ = p.integer_of(NAMES);
});
