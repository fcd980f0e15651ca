// Runs a bundled web app in headless Chromium with WebGPU, as its users would:
// run_model.mjs's static server serves the app's dist/ folder from 127.0.0.1 (under a
// path prefix, so the build must use relative URLs), the page opens its index.html and
// the test calls the page's window.runModel(inputs) once. Any page error or console
// error fails the run.
//
//   node run_app.mjs <dist folder> <inputs.json>
//
// inputs: {name: {dtype, shape, data: base64}} as in run_model.mjs; prints
// {outputs: {name: {dtype, data}}, requests: [paths requested]}; shapes are the caller's.

import fs from "node:fs";
import { PAGE_CODEC, start, withTimeout } from "./run_model.mjs";

// runs inside the page
async function runApp(inputs) {
  const { decode, encode, arrays } = window.kumaCodec;
  const feed = {};
  for (const [name, { dtype, data }] of Object.entries(inputs)) feed[name] = new arrays[dtype](decode(data).buffer);
  const result = await window.runModel(feed);
  const outputs = {};
  for (const [name, array] of Object.entries(result)) {
    outputs[name] = { dtype: array instanceof Int32Array ? "int32" : "float32",
      data: encode(new Uint8Array(array.buffer, array.byteOffset, array.byteLength)) };
  }
  return outputs;
}

async function main([dist, inputsFile]) {
  if (!inputsFile) throw new Error("usage: node run_app.mjs <dist folder> <inputs.json>");
  const inputs = JSON.parse(fs.readFileSync(inputsFile, "utf8"));
  const { server, browser } = await start();
  const problems = [];
  const requests = [];
  try {
    const context = await browser.newContext();
    await context.addInitScript({ content: PAGE_CODEC });
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => { if (message.type() === "error") problems.push(`console error: ${message.text()}`); });
    // (not "requestfailed": Chromium reports some fully read streamed bodies as aborted; a real
    // failure throws in the runtime and so in the page)
    page.on("request", (request) => requests.push(new URL(request.url()).pathname));
    await page.goto(`${server.origin}${server.mount(dist)}/index.html`);
    await page.waitForFunction(() => typeof window.runModel === "function", null, { timeout: 30_000 });
    const outputs = await page.evaluate(runApp, inputs);
    if (problems.length) throw new Error(problems.join("\n"));
    process.stdout.write(JSON.stringify({ outputs, requests }) + "\n");
  } catch (error) {
    throw new Error([error.message, ...problems].join("\n"));
  } finally {
    await browser.close();
    server.server.close();
  }
}

withTimeout(main(process.argv.slice(2)), "running the app").catch((error) => {
  process.stderr.write(`run_app: ${error.message}\n`);
  process.exit(1);
});
