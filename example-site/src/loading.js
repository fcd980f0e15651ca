// What both pages do while their model loads: the weights' progress in #progress and #loaded,
// then the load time and the adapter in #status; or, in #problem, a plain message when the
// browser has no WebGPU or the model fails to load.

const $ = (id) => document.getElementById(id);
const kib = (bytes) => (bytes / 1024).toFixed(0);

/** load (a kuma module's load function) with the progress shown; resolves to the model. */
export async function loadModel(load) {
  if (!navigator.gpu) throw new Error("This browser has no WebGPU, which this page needs to run the model.");
  const started = performance.now();
  const model = await load({
    onProgress(loaded, total) {
      $("progress").value = total ? loaded / total : 1;
      $("loaded").textContent = `${kib(loaded)} / ${kib(total)} KiB of weights`;
    },
  });
  const adapter = adapterName(model);
  $("status").textContent = `Model loaded in ${Math.round(performance.now() - started)} ms${adapter ? ` on ${adapter}` : ""}.`;
  return model;
}

export function adapterName(model) {
  const { description, vendor, architecture } = model.device.adapterInfo ?? {};
  return description || [vendor, architecture].filter(Boolean).join(" ");
}

/** Hides the page's working parts (board) and says what went wrong. */
export function showError(error, board) {
  const webgpu = /WebGPU|adapter/.test(error.message);
  board.hidden = true;
  $("status").hidden = true;
  $("problem").hidden = false;
  $("problem").textContent = webgpu
    ? `${error.message} Try a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled.`
    : `The model failed to load: ${error.message}`;
}
