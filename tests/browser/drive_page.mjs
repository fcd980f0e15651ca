// Drives one page of a web app in headless Chromium, for tests that poke at a live page
// (tests/test_example_site.py): a built dist/ folder served by run_model.mjs's static server,
// or a dev server's URL. One JSON command per stdin line, one JSON reply per stdout line:
//
//   {"open": "<folder>"}      serve the folder from 127.0.0.1 and open its index.html in a fresh
//                             page; with "webgpu": false the page sees no navigator.gpu; with
//                             "page": "generate.html?..." that page of the folder instead
//   {"open": "http://..."}    the same for a URL (a dev server)
//   {"text": "<selector>"}    replies {text} of that element once it is visible
//   {"classify": "<base64>"}  once window.kumaReady resolves, window.kumaClassify(float32 input);
//                             replies {logits: base64 float32}
//   {"draw": [[x, y], ...]}   drag the mouse over the #pad canvas through these points (canvas
//                             pixels), then wait for the page's answer to the finished drawing
//                             (#digit's data-drawing equals #pad's); replies {digit}
//   {"overlay": true}         replies {overlay: {message, file, frame}} of Vite's error overlay, or null
//   {"prompt": "<text>"}      once window.kumaReady resolves, select the text generator page's #prompt
//                             and type the text over it, then wait for the generation for the text
//                             as typed (#generated's data-edit equals #prompt's); replies
//                             {generated, speed} (#generated's and #speed's text)
//
// Every reply has ok (false with error when the command failed, e.g. the page reloaded under it),
// loads (how many times the page has loaded) and problems (page and console errors since the last
// reply). A command gives up after COMMAND_MS, starting Chromium after run_model.mjs's timeout;
// the driver closes the browser when stdin ends.

import readline from "node:readline";
import { start, withTimeout } from "./run_model.mjs";

const COMMAND_MS = 15_000;

async function classify(page, input) {
  const logits = await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    await window.kumaReady;
    const out = await window.kumaClassify(new Float32Array(bytes.buffer));
    return btoa(String.fromCharCode(...new Uint8Array(out.buffer, out.byteOffset, out.byteLength)));
  }, input);
  return { logits };
}

async function draw(page, points) {
  await page.evaluate(() => window.kumaReady);
  const pad = page.locator("#pad");
  const box = await pad.boundingBox();
  const size = await pad.evaluate((canvas) => canvas.width);
  const at = ([x, y]) => [box.x + (x * box.width) / size, box.y + (y * box.height) / size];
  await page.mouse.move(...at(points[0]));
  await page.mouse.down();
  for (const point of points.slice(1)) await page.mouse.move(...at(point), { steps: 8 });
  await page.mouse.up();
  // the answer to the finished drawing, not to a part of the stroke classified on the way (main.js)
  await page.waitForFunction(() => {
    const [pad, digit] = ["pad", "digit"].map((id) => document.getElementById(id));
    return pad.dataset.drawing !== "0" && digit.dataset.drawing === pad.dataset.drawing;
  }, null, { timeout: COMMAND_MS });
  return { digit: await page.textContent("#digit") };
}

async function generate(page, text) {
  await page.evaluate(() => window.kumaReady);
  const prompt = page.locator("#prompt");
  await prompt.selectText();
  await prompt.pressSequentially(text);
  // the generation for the finished text, not for one typed on the way (generate.js)
  await page.waitForFunction(() => {
    const [prompt, generated] = ["prompt", "generated"].map((id) => document.getElementById(id));
    return prompt.dataset.edit !== "0" && generated.dataset.edit === prompt.dataset.edit;
  }, null, { timeout: COMMAND_MS });
  return { generated: await page.textContent("#generated"), speed: await page.textContent("#speed") };
}

// the overlay is a custom element whose parts live in its shadow root
function overlay(page) {
  return page.evaluate(() => {
    const root = document.querySelector("vite-error-overlay")?.shadowRoot;
    const text = (selector) => root.querySelector(selector)?.textContent ?? "";
    return { overlay: root ? { message: text(".message"), file: text(".file"), frame: text(".frame") } : null };
  });
}

async function main() {
  const { server, browser } = await withTimeout(start(), "starting Chromium");
  let page = null;
  let loads = 0;
  let problems = [];

  async function open(target, { webgpu = true, page: file = "index.html" }) {
    await page?.context().close();
    const context = await browser.newContext();
    if (!webgpu) await context.addInitScript(() => delete Navigator.prototype.gpu);
    page = await context.newPage();
    loads = 0;
    page.on("load", () => loads++);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => { if (message.type() === "error") problems.push(`console error: ${message.text()}`); });
    await page.goto(target.startsWith("http") ? target : `${server.origin}${server.mount(target)}/${file}`);
    return {};
  }

  const commands = {
    open,
    async text(selector) {
      await page.locator(selector).waitFor({ state: "visible", timeout: COMMAND_MS });
      return { text: await page.locator(selector).textContent() };
    },
    classify: (input) => classify(page, input),
    draw: (points) => draw(page, points),
    overlay: () => overlay(page),
    prompt: (text) => generate(page, text),
  };
  process.stdout.write(JSON.stringify({ ready: true, chromium: browser.version() }) + "\n");
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let reply;
    try {
      const request = JSON.parse(line);
      const name = Object.keys(request)[0];
      let timer;
      const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${name} timed out after ${COMMAND_MS} ms`)), COMMAND_MS)));
      reply = { ok: true, ...(await Promise.race([commands[name](request[name], request), deadline]).finally(() => clearTimeout(timer))) };
    } catch (error) {
      reply = { ok: false, error: error.message };
    }
    process.stdout.write(JSON.stringify({ ...reply, loads, problems }) + "\n");
    problems = [];
  }
  await browser.close();
  server.server.close();
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ ok: false, error: error.message }) + "\n");
  process.exit(1);
});
