// Drives the onair player page in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, which never downloads a browser. Prints one JSON object on stdout with
// what the page showed; the pytest side (tests/e2e/test_player.py) makes the assertions.
//
//   node tests/e2e/player_check.mjs --url http://127.0.0.1:8080/watch/demo \
//        [--min-levels 2] [--play-seconds 2] [--timeout-seconds 45] [--chromium /usr/bin/chromium]
//
// Exit status: 0 when the page played and the checks could run, 1 otherwise (the JSON then
// carries "error" and the browser console).
import { parseCheckArgs, runCheck } from "./browser.mjs";

const options = parseCheckArgs(
  {
    "min-levels": { type: "string", default: "2" },
    "play-seconds": { type: "string", default: "2" },
    "timeout-seconds": { type: "string", default: "45" },
  },
  "usage: player_check.mjs --url URL",
);
const minLevels = Number(options["min-levels"]);
const playSeconds = Number(options["play-seconds"]);

await runCheck(options, async ({ context, page, result, startedAt }) => {
  result.browserVersion = context.browser()?.version() ?? null;

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

  // A pause puts the viewer behind the live edge on purpose (catch-up leaves them there);
  // the LIVE button takes them back.
  result.heldAtStart = await page.evaluate(() => window.onairPlayer.heldBack);
  await page.evaluate(() => document.getElementById("video").pause());
  result.heldAfterPause = await page.evaluate(() => window.onairPlayer.heldBack);
  await page.click("#live-edge");
  result.heldAfterLive = await page.evaluate(() => window.onairPlayer.heldBack);
});
