//! A float-heavy job: every pair of N points, ROUNDS times (`pairs N ROUNDS`), the inner loop of
//! an n-body step or a kernel matrix: distances, a square root and a division per pair, summed.
//! Pure wasm, no tensor bridge: what NaN canonicalisation and fuel metering cost is all there
//! is to measure (scripts/bench-startup.sh). Prints the sums' bits, which must be the same
//! everywhere.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |index: usize, default: usize| args.get(index).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rounds) = (arg(1, 2000), arg(2, 20));
    // Points from a fixed linear congruential sequence: the same input on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let points: Vec<[f64; 3]> = (0..n).map(|_| [next(), next(), next()]).collect();
    let mut potential = 0.0f64;
    let mut closest = f64::INFINITY;
    for round in 0..rounds {
        let softening = 1e-3 * (round + 1) as f64;
        for (i, a) in points.iter().enumerate() {
            let mut row = 0.0f64;
            for b in &points[i + 1..] {
                let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
                let squared = dx * dx + dy * dy + dz * dz;
                row += 1.0 / (squared + softening).sqrt();
                closest = closest.min(squared);
            }
            potential += row;
        }
    }
    println!("pairs {n} x {rounds}: potential {:016x} closest {:016x}", potential.to_bits(), closest.to_bits());
}
