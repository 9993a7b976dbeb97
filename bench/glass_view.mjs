// The viewer of bench.glass (and of tests/e2e/test_low_latency.py): the onair player page in
// headless Chromium, reading the capture time the publisher drew into every frame.
//
//   node bench/glass_view.mjs --url http://127.0.0.1:8080/watch/glass [--url2 ...?ll=0]
//        [--seconds 60] [--bits 24] [--timeout-seconds 120]
//
// The publisher (bench/glass.py) draws the wall clock's milliseconds (mod 2^bits) as a row of
// black/white blocks across the top of each frame. For every frame the page presents
// (requestVideoFrameCallback), the top strip is drawn into a small canvas, each block's centre
// is read, and latency = the moment the frame is shown (performance.timeOrigin +
// expectedDisplayTime, the viewer's clock) − the decoded capture time (the same machine's
// clock). Stalls: playback waiting (`waiting` until `playing`) for 100 ms or more after it
// began; shorter waits are counted apart as blips.
// --url, then --url2, each watched for --seconds in the same tab. Prints one JSON object:
// {pages: [{url, samples: [latency_ms…], stalls, stallMs, levels: {height: frames}, ll}]}.
import { parseCheckArgs, runCheck } from "../tests/e2e/browser.mjs";

const options = parseCheckArgs(
  {
    url2: { type: "string" },
    seconds: { type: "string", default: "60" },
    bits: { type: "string", default: "24" },
    "strip-fraction": { type: "string", default: "0.0833" },
    "timeout-seconds": { type: "string", default: "180" },
  },
  "usage: glass_view.mjs --url URL [--url2 URL] [--seconds 60]",
);
const seconds = Number(options.seconds);
const bits = Number(options.bits);
const stripFraction = Number(options["strip-fraction"]);

function watch([bitsCount, strip]) {
  // runs in the page: installs the frame reader, returns nothing (results on window.glass)
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  const width = bitsCount * 4;
  canvas.width = width;
  canvas.height = 4;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const modulus = 2 ** bitsCount;
  const glass = { samples: [], rejected: 0, stalls: 0, blips: 0, stallMs: 0, levels: {},
    started: null, stallLog: [] };
  window.glass = glass;
  let waitingSince = null;
  // a stall: playback waited at least STALL_MS (three frames); shorter waits are blips
  const STALL_MS = 100;
  const ended = () => {
    if (waitingSince === null) return;
    const waited = Date.now() - waitingSince;
    const hls = window.onairPlayer && window.onairPlayer.hls;
    glass.stallLog.push({ afterMs: waitingSince - glass.started, waitedMs: waited,
      currentTime: video.currentTime, level: hls ? hls.currentLevel : null });
    if (waited >= STALL_MS) {
      glass.stalls += 1;
      glass.stallMs += waited;
    } else {
      glass.blips += 1;
    }
    waitingSince = null;
  };
  video.addEventListener("playing", () => {
    if (glass.started === null) {
      glass.started = Date.now();
      // where the join landed: the position against hls.js's live sync point and the buffer
      const hls = window.onairPlayer && window.onairPlayer.hls;
      const ranges = video.buffered;
      glass.join = { currentTime: video.currentTime,
        liveSync: hls ? hls.liveSyncPosition : null, latency: hls ? hls.latency : null,
        targetLatency: hls ? hls.targetLatency : null,
        bufferStart: ranges.length ? ranges.start(0) : null,
        bufferEnd: ranges.length ? ranges.end(ranges.length - 1) : null };
    }
    ended();
  });
  video.addEventListener("waiting", () => {
    if (glass.started !== null && waitingSince === null) waitingSince = Date.now();
  });
  glass.finish = ended; // a wait still going on when the watch ends counts too
  glass.errors = []; // hls.js errors (what a stall's cause usually is), first 20
  glass.recentAtStall = []; // the loads before each of the first five waits
  const listen = setInterval(() => {
    const hls = window.onairPlayer && window.onairPlayer.hls;
    if (!hls || !window.Hls) return;
    clearInterval(listen);
    // what hls.js asked for and got just before each stall (the last 12 loads)
    const recent = [];
    const note = (what, url, ms) => {
      recent.push({ t: Date.now() - (glass.started || Date.now()), what, ms,
        url: (url || "").split("/").slice(-2).join("/") });
      if (recent.length > 16) recent.shift();
    };
    hls.on(window.Hls.Events.FRAG_LOADED, (_e, d) => {
      const stats = d.part ? d.part.stats : d.frag.stats;
      note("part", d.part ? d.part.url : d.frag.url,
        Math.round(stats.loading.end - stats.loading.start));
    });
    hls.on(window.Hls.Events.FRAG_LOADING, (_e, d) => {
      note("asks", d.part ? d.part.url : d.frag.url, null);
    });
    hls.on(window.Hls.Events.LEVEL_LOADED, (_e, d) => {
      note("playlist", d.details.url, Math.round(d.stats.loading.end - d.stats.loading.start));
    });
    video.addEventListener("waiting", () => {
      if (glass.started !== null && glass.recentAtStall.length < 5) {
        glass.recentAtStall.push(recent.slice());
      }
    });
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (glass.errors.length < 20) {
        glass.errors.push({ afterMs: glass.started === null ? null : Date.now() - glass.started,
          details: data.details, fatal: data.fatal, code: data.response ? data.response.code : null,
          url: data.part ? data.part.url : data.frag ? data.frag.url : null });
      }
    });
  }, 20);
  const onFrame = (_now, meta) => {
    const shownAt = performance.timeOrigin + meta.expectedDisplayTime;
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (w && h) {
      // the blocks span 1272 of every 1280 columns; each becomes 4 canvas pixels
      ctx.drawImage(video, 0, 0, (w * 1272) / 1280, h * strip, 0, 0, width, 4);
      const data = ctx.getImageData(0, 0, width, 4).data;
      let value = 0;
      for (let i = 0; i < bitsCount; i++) {
        const luma = data[(2 * width + i * 4 + 2) * 4];
        value = value * 2 + (luma > 128 ? 1 : 0);
      }
      const latency = (((Math.round(shownAt) - value) % modulus) + modulus) % modulus;
      if (latency < 60000) {
        glass.samples.push(latency);
        glass.levels[h] = (glass.levels[h] || 0) + 1;
      } else {
        glass.rejected += 1;
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

await runCheck(options, async ({ page, result }) => {
  // The reader is installed in every page before its own scripts run, once its DOM is
  // parsed: installed after `goto` returned, it could miss the first `playing` of a player
  // that had already started (with 1 s keyframes it starts quickly), and then wait for the
  // next one — a stall, tens of seconds later — to call that the start.
  await page.addInitScript({
    content: `document.addEventListener("DOMContentLoaded", () =>
      (${watch.toString()})(${JSON.stringify([bits, stripFraction])}));`,
  });
  // one page after the other, in the same tab: a background tab is throttled
  result.pages = [];
  for (const url of [options.url, options.url2].filter(Boolean)) {
    await page.goto(url, { waitUntil: "domcontentloaded" });
    await page.waitForFunction(() => window.glass && window.glass.started !== null);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const glass = await page.evaluate(() => {
      window.glass.finish();
      const hls = window.onairPlayer && window.onairPlayer.hls;
      return {
        ...window.glass,
        ll: !!(window.onairPlayer && window.onairPlayer.config.lowLatency),
        hlsLatency: hls && hls.latency > 0 ? hls.latency : null,
        targetLatency: hls ? hls.targetLatency : null,
      };
    });
    result.pages.push({ url, ...glass });
  }
});
