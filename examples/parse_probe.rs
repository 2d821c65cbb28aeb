use std::time::Instant;
fn main() {
    let b = std::fs::read("/tmp/state1000.json").unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let c: gateway::model::GatewayConfig = serde_json::from_slice(&b).unwrap();
        let p = t.elapsed();
        let t = Instant::now();
        let s = serde_json::to_string(&c).unwrap();
        let w = t.elapsed();
        let t = Instant::now();
        let c2 = c.clone();
        let cl = t.elapsed();
        let t = Instant::now();
        let eq = c == c2;
        let e = t.elapsed();
        let t = Instant::now();
        drop(c2);
        let d = t.elapsed();
        println!("parse {p:?} serialize {w:?} ({} bytes) clone {cl:?} eq {eq} {e:?} drop {d:?}", s.len());
    }
}
