// Drives the onair player page in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, which never downloads a browser. Prints one JSON object on stdout with
// what the page showed; the pytest side (tests/e2e/test_player.py) makes the assertions.
//
//   node tests/e2e/player_check.mjs --url http://127.0.0.1:8080/watch/demo \
//        [--min-levels 2] [--play-seconds 2] [--timeout-seconds 45] [--chromium /usr/bin/chromium]
//
// Exit status: 0 when the page played and the checks could run, 1 otherwise (the JSON then
// carries "error" and the browser console).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: options } = parseArgs({
  options: {
    url: { type: "string" },
    "min-levels": { type: "string", default: "2" },
    "play-seconds": { type: "string", default: "2" },
    "timeout-seconds": { type: "string", default: "45" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!options.url) {
  console.error("usage: player_check.mjs --url URL");
  process.exit(2);
}
const minLevels = Number(options["min-levels"]);
const playSeconds = Number(options["play-seconds"]);
const timeout = Number(options["timeout-seconds"]) * 1000;

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const result = { url: options.url, console: [], failedRequests: [] };
const startedAt = Date.now();
const userDataDir = mkdtempSync(join(tmpdir(), "onair-chromium-"));
let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout,
  });
  result.browserVersion = context.browser()?.version() ?? null;
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
  page.on("response", (response) => {
    if (response.status() >= 400) {
      result.failedRequests.push(`${response.status()} ${response.url()}`);
    }
  });

  const response = await page.goto(options.url, { waitUntil: "domcontentloaded" });
  result.pageStatus = response ? response.status() : null;

  await page.waitForFunction(
    (n) => window.onairPlayer && window.onairPlayer.hls && window.onairPlayer.hls.levels.length >= n,
    minLevels,
  );
  result.mode = await page.evaluate(() => window.onairPlayer.mode);
  result.levels = await page.evaluate(() =>
    window.onairPlayer.hls.levels.map((level) => ({
      height: level.height,
      width: level.width,
      bitrate: level.bitrate,
    })),
  );

  // Playback: currentTime must move forward by playSeconds from where playing began.
  const firstTime = await (
    await page.waitForFunction(() => {
      const video = document.getElementById("video");
      return !video.paused && video.readyState >= 3 && video.currentTime > 0
        ? video.currentTime
        : null;
    })
  ).jsonValue();
  result.firstCurrentTime = firstTime;
  await page.waitForFunction(
    ([start, seconds]) => document.getElementById("video").currentTime >= start + seconds,
    [firstTime, playSeconds],
  );
  result.currentTime = await page.evaluate(() => document.getElementById("video").currentTime);
  result.playedAfterMs = Date.now() - startedAt;

  const ui = () =>
    page.evaluate(() => ({
      options: [...document.querySelectorAll("#quality option")].map((o) => ({
        value: o.value,
        text: o.textContent,
      })),
      selected: document.getElementById("quality").value,
      currentLevelText: document.getElementById("current-level").textContent,
      liveEdgeHidden: document.getElementById("live-edge").hidden,
      atLiveEdge: document.getElementById("live-edge").dataset.atEdge,
      autoLevelEnabled: window.onairPlayer.hls.autoLevelEnabled,
      currentLevel: window.onairPlayer.currentLevel,
    }));
  result.beforeSwitch = await ui();

  // Pin the lowest level from the selector, as a viewer would, and wait for hls.js to switch.
  const lowest = result.levels.reduce(
    (best, level, index) => (level.bitrate < result.levels[best].bitrate ? index : best),
    0,
  );
  await page.selectOption("#quality", String(lowest));
  await page.waitForFunction(
    (index) =>
      window.onairPlayer.currentLevel === index && !window.onairPlayer.hls.autoLevelEnabled,
    lowest,
  );
  const timeAtSwitch = await page.evaluate(() => document.getElementById("video").currentTime);
  await page.waitForFunction(
    (start) => document.getElementById("video").currentTime >= start + 1,
    timeAtSwitch,
  );
  result.pinnedLevel = lowest;
  result.afterSwitch = await ui();

  await page.selectOption("#quality", "-1");
  await page.waitForFunction(() => window.onairPlayer.hls.autoLevelEnabled);
  result.afterAuto = await ui();
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  exitCode = 1;
} finally {
  if (context) {
    await context.close().catch(() => {});
  }
  rmSync(userDataDir, { recursive: true, force: true });
}
result.elapsedMs = Date.now() - startedAt;
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(exitCode);
