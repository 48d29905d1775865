// Test support: Debian's Chromium, headless, driven by playwright-core (a browser download
// is not possible here), and where the tests put their screenshots.

import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

// The README shows the committed ones; `SCREENSHOTS_DIR` sends them elsewhere (the
// repository's test run does, so that it leaves the work tree as it was).
export const SCREENSHOTS = process.env.SCREENSHOTS_DIR
  ? join(resolve(process.env.SCREENSHOTS_DIR), "/")
  : fileURLToPath(new URL("../screenshots/", import.meta.url));

/** Starts the browser; the flags keep it off the network this machine does not have. */
export async function launchChromium() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--ignore-certificate-errors"],
    timeout: 30_000,
  });
}
