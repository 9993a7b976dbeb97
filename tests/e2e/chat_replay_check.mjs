// Drives a VOD page's chat replay in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core: pauses and seeks to --seek, reads the panel, waits paused, seeks back to
// --back, reads it again, then seeks to --seek and plays until the message --next-id shows,
// noting the video's time when it does. Prints one JSON object on stdout; the assertions
// are in tests/e2e/test_chat_replay.py.
//
//   node tests/e2e/chat_replay_check.mjs --url http://127.0.0.1:8080/watch/vod/ID \
//        --seek 30 --back 10 --next-id ID [--timeout-seconds 30] [--chromium PATH]
import { parseCheckArgs, runCheck } from "./browser.mjs";

const options = parseCheckArgs(
  {
    seek: { type: "string", default: "30" },
    back: { type: "string", default: "10" },
    "next-id": { type: "string" },
    "timeout-seconds": { type: "string", default: "30" },
  },
  "usage: chat_replay_check.mjs --url URL --next-id ID [--seek S] [--back S]",
  ["url", "next-id"],
);
const seekS = Number(options.seek);
const backS = Number(options.back);
const nextId = options["next-id"];

// as browser.mjs's CHROMIUM_ARGS, without --disable-quic (this script never passed it)
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

await runCheck(
  options,
  async ({ page, result }) => {
    page.on("request", (request) => {
      if (request.url().includes("/api/chat/")) {
        result.chatRequests.push(request.url());
      }
    });

    const response = await page.goto(options.url, { waitUntil: "domcontentloaded" });
    result.pageStatus = response ? response.status() : null;
    result.finalUrl = page.url();
    await page.waitForFunction(() => {
      const video = document.getElementById("video");
      return window.onairReplay && window.onairReplay.ready && video.readyState >= 2;
    });

    const panel = () =>
      page.evaluate(() => {
        const root = document.getElementById("chat");
        const lines = [...root.querySelectorAll("li.chat-line")];
        return {
          currentTime: document.getElementById("video").currentTime,
          paused: document.getElementById("video").paused,
          ids: lines.map((li) => li.dataset.id),
          at: lines.map((li) => Number(li.dataset.at)),
          texts: lines.map((li) => li.querySelector(".chat-text").textContent),
          elementsInTexts: lines.reduce((n, li) => n + li.querySelectorAll(".chat-text *").length, 0),
        };
      });
    const seekPaused = async (seconds) => {
      await page.evaluate((s) => {
        const video = document.getElementById("video");
        video.pause();
        video.currentTime = s;
      }, seconds);
      await page.waitForFunction(
        (s) => {
          const video = document.getElementById("video");
          return !video.seeking && Math.abs(video.currentTime - s) < 0.5 && window.onairReplay.settled();
        },
        seconds,
      );
      await page.waitForTimeout(400); // a few panel ticks
    };

    result.origin = await page.evaluate(() => window.onairReplay.origin);
    result.runs = await page.evaluate(() => window.onairReplay.runs);
    result.chrome = await page.evaluate(() => {
      const root = document.getElementById("chat");
      return {
        mode: root.dataset.mode,
        title: root.querySelector(".chat-replay-title")?.textContent ?? null,
        inputs: root.querySelectorAll("input, textarea, form, button, [contenteditable]").length,
      };
    });

    await seekPaused(seekS);
    result.atSeek = await panel();
    await page.waitForTimeout(1500);
    result.paused = await panel();

    await seekPaused(backS);
    result.atBack = await panel();

    await seekPaused(seekS);
    result.beforePlay = await panel();
    await page.evaluate(() => document.getElementById("video").play());
    const shownAt = await page.waitForFunction(
      (id) =>
        document.querySelector(`#chat li[data-id="${id}"]`)
          ? document.getElementById("video").currentTime
          : null,
      nextId,
      { polling: 50 },
    );
    result.nextShownAt = await shownAt.jsonValue();
    result.afterNext = await panel();
  },
  { args: ARGS, fields: { chatRequests: [] } },
);
