// DDIM (eta 0) sampling with ONNX Runtime (npm onnxruntime-node), the peer
// of bench/bench_mlp.py and bench/bench_unet.py.  The denoiser is the ONNX
// export (torch.onnx.export) of the same architecture; the DDIM update runs
// here in JavaScript (a few flops per element, as in the Python side).
//
// Usage: node ort_ddim.js CONFIG.json   (written by bench/_peers.py)
// CONFIG: {model, batch, shape: [dims after the batch], abar: [per kept step,
// oldest first], t: [kept indices], threads, reps}.  Prints one JSON line:
// {"version", "seconds": [per rep]} after one untimed warm-up run.
"use strict";
const fs = require("fs");
const path = require("path");

let ort;
try {
    ort = require(path.join(__dirname, "node_modules", "onnxruntime-node"));
} catch (e) {
    console.log(JSON.stringify({ skip: "onnxruntime-node is not installed here: cd bench/ort && npm install --ignore-scripts" }));
    process.exit(0);
}

function randn(n, seed) {
    // xorshift32 + Box-Muller: the start noise (its values do not matter).
    const out = new Float32Array(n);
    let s = seed >>> 0 || 1;
    const u = () => {
        s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
        return (s + 0.5) / 4294967296;
    };
    for (let i = 0; i < n; i += 2) {
        const r = Math.sqrt(-2 * Math.log(u())), th = 2 * Math.PI * u();
        out[i] = r * Math.cos(th);
        if (i + 1 < n) out[i + 1] = r * Math.sin(th);
    }
    return out;
}

async function main() {
    const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    const opts = {
        intraOpNumThreads: cfg.threads,
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
    };
    const sess = await ort.InferenceSession.create(cfg.model, opts);
    const n = cfg.batch * cfg.shape.reduce((a, b) => a * b, 1);
    const dims = [cfg.batch, ...cfg.shape];
    const tArr = cfg.t.map((v) => new ort.Tensor("int64", BigInt64Array.from({ length: cfg.batch }, () => BigInt(v)), [cfg.batch]));
    async function run(seed) {
        let x = randn(n, seed);
        for (let i = cfg.t.length - 1; i >= 0; i--) {
            const a = cfg.abar[i], ap = i > 0 ? cfg.abar[i - 1] : 1.0;
            const res = await sess.run({ x: new ort.Tensor("float32", x, dims), t: tArr[i] });
            const eps = res[sess.outputNames[0]].data;
            const sa = Math.sqrt(a), s1 = Math.sqrt(1 - a), sap = Math.sqrt(ap), s1p = Math.sqrt(1 - ap);
            const y = new Float32Array(n);
            for (let k = 0; k < n; k++) {
                let x0 = (x[k] - s1 * eps[k]) / sa;
                x0 = x0 < -1 ? -1 : x0 > 1 ? 1 : x0;
                const e = (x[k] - sa * x0) / s1;
                y[k] = sap * x0 + s1p * e;
            }
            x = y;
        }
        return x;
    }
    await run(1);
    const seconds = [];
    for (let r = 0; r < cfg.reps; r++) {
        const t0 = process.hrtime.bigint();
        await run(r + 2);
        seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    let version = "unknown";
    try {
        version = require(path.join(__dirname, "node_modules", "onnxruntime-node", "package.json")).version;
    } catch (e) { /* keep unknown */ }
    console.log(JSON.stringify({ version, seconds }));
}

main().catch((e) => {
    console.log(JSON.stringify({ skip: "onnxruntime-node failed: " + String(e && e.message || e) }));
});
