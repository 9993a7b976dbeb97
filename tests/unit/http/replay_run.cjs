// Runs scenarios on the chat replay's pure part (gateway/http/static/replay.js) for
// tests/unit/http/test_replay_js.py: a fake history API answers from a list of messages
// exactly as GET /api/chat/<channel>?since&until&limit does (docs/chat.md), and a scenario's
// steps move the playback position, hold or fail requests, and move the clock.
//   node tests/unit/http/replay_run.cjs < scenarios.json
//
// A scenario: {timeline: {runs: [...]} | {fragments: [...]}, options: {...}, messages: [...],
//              steps: [["at", s] | ["hold"] | ["release"] | ["fail", n] | ["clock", ms]],
//              walls: [ms...], medias: [s...]}
// Out, per scenario: {runs, mediaOf: [...], wallAt: [...], steps: [{visible, settled,
//                     fetches: [[since, until, limit]...], loaded: [k...]}]}
"use strict";
const path = require("node:path");
const { Timeline, Replay } = require(
  path.join(__dirname, "..", "..", "..", "gateway", "http", "static", "replay.js"),
);

function historyPage(messages, since, until, limit) {
  const matching = messages.filter((m) => m.ts >= since && m.ts <= until);
  const page = matching.slice(0, limit);
  const more = matching.length > limit;
  return { messages: page, more, next_since: more ? page[page.length - 1].ts : null };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

async function run(scenario) {
  const timeline = scenario.timeline.runs
    ? new Timeline(scenario.timeline.runs)
    : Timeline.fromFragments(scenario.timeline.fragments);
  const out = {
    runs: timeline ? timeline.runs : null,
    mediaOf: (scenario.walls || []).map((w) => timeline.mediaOf(w)),
    wallAt: (scenario.medias || []).map((s) => timeline.wallAt(s)),
    steps: [],
  };
  if (!scenario.steps) {
    return out;
  }
  const messages = scenario.messages.slice().sort((a, b) => a.ts - b.ts);
  let clock = 0;
  let holding = false;
  let failing = 0;
  const held = [];
  let fetches = [];
  const replay = new Replay({
    ...scenario.options,
    now: () => clock,
    fetchPage(since, until, limit) {
      fetches.push([since, until, limit]);
      if (failing > 0) {
        failing -= 1;
        return Promise.reject(new Error("history unavailable"));
      }
      const answer = historyPage(messages, since, until, limit);
      if (holding) {
        return new Promise((resolve) => held.push(() => resolve(answer)));
      }
      return Promise.resolve(answer);
    },
  });
  replay.setTimeline(timeline);
  let position = 0;
  for (const step of scenario.steps) {
    switch (step[0]) {
      case "at":
        position = step[1];
        replay.update(position);
        break;
      case "hold":
        holding = true;
        break;
      case "release":
        holding = false;
        held.splice(0).forEach((resolve) => resolve());
        break;
      case "fail":
        failing = step[1];
        break;
      case "clock":
        clock = step[1];
        replay.update(position);
        break;
      default:
        throw new Error(`unknown step ${step[0]}`);
    }
    for (let i = 0; i < 50; i++) {
      await settle(); // let every answered request land (pages chain, windows follow)
    }
    out.steps.push({
      visible: replay.visible(position).map((m) => m.id),
      settled: replay.settled(position),
      fetches,
      loaded: Object.keys(replay.windows).map(Number).filter((k) => replay.loaded(k)),
    });
    fetches = [];
  }
  return out;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const results = [];
  for (const scenario of JSON.parse(input)) {
    results.push(await run(scenario));
  }
  process.stdout.write(JSON.stringify(results));
});
