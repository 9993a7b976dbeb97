// Drives the onair player in headless Chromium (Debian's /usr/bin/chromium, playwright-core)
// through three network phases and prints one JSON object on stdout with every fragment the
// player loaded and every stall; tests/e2e/test_abr_player.py makes the assertions.
//
//   node tests/e2e/abr_check.mjs --url http://127.0.0.1:8080/watch/abr \
//        [--throttle-bps 1000000] [--slow-fragments 12] [--timeout-seconds 150]
//
// Phases: "fast" (no throttle) until a fragment of the top level has loaded; "slow" (the page
// throttled to --throttle-bps with Network.emulateNetworkConditions over the DevTools
// protocol) for --slow-fragments fragments; "again" (throttle lifted) until a fragment above
// the last slow one has loaded. Then the page is opened once more with ?abr=hlsjs.
// Exit status: 0 when every phase could run, 1 otherwise (the JSON then carries "error").
import { CHROMIUM_ARGS, parseCheckArgs, runCheck } from "./browser.mjs";

const options = parseCheckArgs(
  {
    "throttle-bps": { type: "string", default: "1000000" },
    "throttle-latency-ms": { type: "string", default: "40" },
    "slow-fragments": { type: "string", default: "12" },
    "timeout-seconds": { type: "string", default: "150" },
  },
  "usage: abr_check.mjs --url URL",
);
const throttleBps = Number(options["throttle-bps"]);
const slowFragments = Number(options["slow-fragments"]);

// Installed in the page once hls.js exists: records fragments, emergency aborts and stalls.
function instrument() {
  const player = window.onairPlayer;
  const video = document.getElementById("video");
  const Events = window.Hls.Events;
  const log = { phase: "fast", fragments: [], aborted: [], stalls: [], playing: false };
  window.__abrLog = log;
  const now = () => performance.now() / 1000;
  player.hls.on(Events.FRAG_LOADED, (_event, data) => {
    const frag = data.frag;
    if (frag.type !== "main") {
      return;
    }
    const stats = data.part ? data.part.stats : frag.stats;
    log.fragments.push({
      t: now(),
      phase: log.phase,
      level: frag.level,
      sn: frag.sn,
      bytes: stats.loaded,
      ms: Math.round(stats.loading.end - stats.loading.start),
      bufferS: player.stats ? player.stats.bufferS : null,
    });
  });
  player.hls.on(Events.FRAG_LOAD_EMERGENCY_ABORTED, (_event, data) => {
    log.aborted.push({ t: now(), phase: log.phase, level: data.frag.level, sn: data.frag.sn });
  });
  video.addEventListener("playing", () => {
    log.playing = true;
  });
  video.addEventListener("waiting", () => {
    if (log.playing) {
      log.stalls.push({ t: now(), phase: log.phase });
    }
  });
}

await runCheck(
  options,
  async ({ context, page, result }) => {
      result.browserVersion = context.browser()?.version() ?? null;
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    const throttle = (bps, latencyMs) =>
      cdp.send("Network.emulateNetworkConditions", {
        offline: false,
        latency: latencyMs,
        downloadThroughput: bps > 0 ? bps / 8 : -1,
        uploadThroughput: bps > 0 ? bps / 8 : -1,
      });

    const separator = options.url.includes("?") ? "&" : "?";
    const response = await page.goto(`${options.url}${separator}stats=1`, {
      waitUntil: "domcontentloaded",
    });
    result.pageStatus = response ? response.status() : null;
    await page.waitForFunction(
      () => window.onairPlayer && window.onairPlayer.hls && window.onairPlayer.hls.levels.length > 1,
    );
    await page.evaluate(instrument);
    result.mode = await page.evaluate(() => window.onairPlayer.mode);
    result.abr = await page.evaluate(() => window.onairPlayer.abr);
    result.levels = await page.evaluate(() =>
      window.onairPlayer.hls.levels.map((level) => ({
        height: level.height,
        bitrate: level.bitrate,
        averageBitrate: level.averageBitrate,
      })),
    );
    const top = result.levels.length - 1;
    const phaseFragments = (phase) =>
      page.evaluate((p) => window.__abrLog.fragments.filter((f) => f.phase === p), phase);

    // fast: until the top level has been loaded
    await page.waitForFunction(
      (level) => window.__abrLog.fragments.some((f) => f.level === level),
      top,
    );

    // slow: the page throttled
    await throttle(throttleBps, Number(options["throttle-latency-ms"]));
    await page.evaluate(() => {
      window.__abrLog.phase = "slow";
    });
    await page.waitForFunction(
      (n) => window.__abrLog.fragments.filter((f) => f.phase === "slow").length >= n,
      slowFragments,
    );
    const slow = await phaseFragments("slow");
    const settled = slow[slow.length - 1].level;
    result.statsWhileThrottled = await page.evaluate(() => window.onairPlayer.stats);
    result.statsText = await page.evaluate(() => document.getElementById("stats").innerText);

    // again: the throttle lifted, until a level above the settled one has loaded
    await throttle(-1, 0);
    await page.evaluate(() => {
      window.__abrLog.phase = "again";
    });
    await page.waitForFunction(
      (level) => window.__abrLog.fragments.some((f) => f.phase === "again" && f.level > level),
      settled,
    );

    const log = await page.evaluate(() => window.__abrLog);
    result.fragments = log.fragments;
    result.aborted = log.aborted;
    result.stalls = log.stalls;
    result.stallsWhileThrottled = log.stalls.filter((s) => s.phase === "slow").length;

    // ?abr=hlsjs: hls.js's own controller
    await page.goto(`${options.url}${separator}abr=hlsjs`, { waitUntil: "domcontentloaded" });
    await page.waitForFunction(
      () => window.onairPlayer && window.onairPlayer.hls && window.onairPlayer.hls.levels.length > 1,
    );
    result.hlsjsMode = await page.evaluate(() => ({
      abr: window.onairPlayer.abr,
      onairController: "onair" in window.onairPlayer.hls.abrController,
    }));
  },
  { args: [...CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"] },
);
