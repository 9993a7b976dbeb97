// The part the e2e check scripts (player_check.mjs, abr_check.mjs, chat_replay_check.mjs)
// share: their common command-line options, launching Debian's headless Chromium with
// playwright-core (which never downloads a browser) in a throwaway profile, recording the
// page's console, page errors and failed (>= 400) responses, and reporting: one JSON object
// on stdout, exit status 0 when the steps ran, 1 otherwise (the JSON then carries "error").
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// The script's own options plus --url and --chromium (--timeout-seconds, whose default
// differs, is the script's); exits with status 2 and `usage` when a `required` one is missing.
export function parseCheckArgs(own, usage, required = ["url"]) {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      ...own,
      chromium: { type: "string", default: "/usr/bin/chromium" },
    },
  });
  if (required.some((name) => !values[name])) {
    console.error(usage);
    process.exit(2);
  }
  return values;
}

// Runs `steps({ context, page, result, startedAt })` on a fresh page, then prints `result`
// (which starts as { url, console, failedRequests, ...fields }) and exits.
export async function runCheck(options, steps, { args = CHROMIUM_ARGS, fields = {} } = {}) {
  const timeout = Number(options["timeout-seconds"]) * 1000;
  const result = { url: options.url, console: [], failedRequests: [], ...fields };
  const startedAt = Date.now();
  const userDataDir = mkdtempSync(join(tmpdir(), "onair-chromium-"));
  let context;
  let exitCode = 0;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: options.chromium,
      headless: true,
      args,
      timeout,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(timeout);
    page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
    page.on("response", (response) => {
      if (response.status() >= 400) {
        result.failedRequests.push(`${response.status()} ${response.url()}`);
      }
    });
    await steps({ context, page, result, startedAt });
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
}
