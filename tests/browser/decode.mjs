// Greedy decoding with a stateful kuma model in headless Chromium, as a page would: a step model
// forward(token, pos) -> (next token "output0", logits) with its KV cache in state buffers. The
// prompt goes in token by token; each decode step feeds the last step's token output back as a
// GPUBuffer (it never leaves the GPU) and reads back only the 4-byte token. Then reset() and the
// same generation again, its prompt's runs called all at once (they queue), timed for tokens/s;
// then the errors of misused run options, GPUBuffer inputs and outputBuffer().
//
// With prefill (a model whose token and pos inputs have a dim, kuma.toml dims), the prompt goes in
// as one run of its length, and the first decode step gets the last token as a typed array (the
// token output then holds one token per prompt position).
//
//   node decode.mjs --serve    one JSON request {root, model, prompt, steps, prefill?, options?} per stdin
//                              line (options: load()'s, e.g. { deviceClass: "gpu" }), one JSON reply
//                              {ok, first, again, prefillMs, decodeMs, errors, adapter, deviceClass} per
//                              stdout line (prefillMs: the second generation's prompt runs called until
//                              the first token is read back)

import { inModelPage, serve } from "./run_model.mjs";

// runs inside the page
async function decodeInPage({ url, prompt, steps, prefill, options }) {
  const gpuErrors = [];
  const { load } = await import(url);
  const model = await load(options);
  model.device.addEventListener("uncapturederror", (e) => gpuErrors.push(e.error.message));
  const [tokenName] = model.outputs.map((o) => o.name);
  // queued: the prompt's runs are all called at once, and resolve in order
  async function generate(queued) {
    const read = { read: [tokenName] };
    const prefillStarted = performance.now();
    const prompted = [];
    if (prefill) prompted.push(model.run({ token: Int32Array.from(prompt), pos: Int32Array.from(prompt.keys()) }, read));
    for (let pos = 0; pos < prompt.length && !prefill; pos++) {
      const run = model.run({ token: Int32Array.of(prompt[pos]), pos: Int32Array.of(pos) }, read);
      prompted.push(queued ? run : await run);
    }
    const tokens = [(await prompted.at(-1))[tokenName].at(-1)];
    const prefillMs = performance.now() - prefillStarted;
    let decodeMs = 0;
    for (let pos = prompt.length; pos < prompt.length + steps - 1; pos++) {
      const started = performance.now();
      const token = prefill && pos === prompt.length ? Int32Array.of(tokens[0]) : model.outputBuffer(tokenName);
      const out = await model.run({ token, pos: Int32Array.of(pos) }, read);
      decodeMs += performance.now() - started;
      if (Object.keys(out).length !== 1) throw new Error(`run read back ${Object.keys(out)}, not only ${tokenName}`);
      tokens.push(out[tokenName][0]);
    }
    return { tokens, prefillMs, decodeMs };
  }
  // each misuse of the API, and the error it gives (null: none)
  async function misuses() {
    const pos = Int32Array.of(0);
    const cases = {
      unknownRead: () => model.run({ token: Int32Array.of(1), pos }, { read: ["nope"] }),
      notCopySource: () => model.run({ token: model.device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE }), pos }),
      tooSmall: () => model.run({ token: model.device.createBuffer({ size: 0, usage: GPUBufferUsage.COPY_SRC }), pos }),
      unknownOutput: () => model.outputBuffer("nope"),
    };
    const errors = {};
    for (const [name, call] of Object.entries(cases)) {
      try {
        await call();
        errors[name] = null;
      } catch (error) {
        errors[name] = `${error.name}: ${error.message}`;
      }
    }
    return errors;
  }
  try {
    const first = await generate(false);
    model.reset(); // queued before the next runs: not awaited
    const again = await generate(true);
    const errors = await misuses();
    const info = model.device.adapterInfo;
    return { first: first.tokens, again: again.tokens, prefillMs: again.prefillMs, decodeMs: again.decodeMs, errors, gpuErrors, deviceClass: model.deviceClass,
      adapter: { vendor: info.vendor, architecture: info.architecture, description: info.description } };
  } finally {
    model.dispose();
  }
}

const decode = (browser, server, { prompt, steps, prefill = false, options = {}, ...where }) =>
  inModelPage(browser, server, where, decodeInPage, { prompt, steps, prefill, options });

serve(decode).catch((error) => {
  process.stderr.write(`decode: ${error.message}\n`);
  process.exit(1);
});
