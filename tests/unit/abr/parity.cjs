// Replays a recorded sequence of LiveAbrController calls on the JavaScript controller
// (gateway/http/static/abr.js) and prints what each call returned, as JSON, for
// tests/unit/abr/test_parity.py to compare with the Python controller.
//   node tests/unit/abr/parity.cjs < sequence.json
"use strict";
const path = require("node:path");
const { LiveAbrController } = require(
  path.join(__dirname, "..", "..", "..", "gateway", "http", "static", "abr.js"),
);

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const sequences = JSON.parse(input);
  const results = sequences.map((sequence) => {
    const controller = new LiveAbrController(sequence.bitrates, {
      chunkS: sequence.chunk_s,
      targetLatencyS: sequence.target_latency_s,
      blockingReload: sequence.blocking_reload,
    });
    return sequence.ops.map((op) => {
      switch (op[0]) {
        case "sample":
          controller.addSample(op[1], op[2], op[3]);
          return [controller.estimateBps(), controller.safeBps(), controller.rttS()];
        case "choose":
          return [controller.choose(op[1], op[2], op[3]), controller.upHeldS,
            controller.sinceDownS];
        case "abandon":
          return [controller.abandon(op[1], op[2], op[3], op[4], op[5]), controller.level];
        case "chunk":
          controller.chunkS = op[1];
          return [controller.chunkS];
        default:
          throw new Error(`unknown op ${op[0]}`);
      }
    });
  });
  process.stdout.write(JSON.stringify(results));
});
