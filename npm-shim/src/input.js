// `kuma-build/input`: small helpers that turn what a page has into a model's inputs.
// Each is a plain exported function with no module-level state, and package.json says
// "sideEffects": false, so a bundle carries only the helpers it imports (none by default).
//
// imageToTensor follows torchvision's tensor pipeline: pixels / 255, a bilinear resize with
// half-pixel centres and no antialiasing (F.interpolate(mode="bilinear", align_corners=False,
// antialias=False)), then (x - mean) / std per channel, written as NCHW float32. The resize is
// done here on the source's own pixels, not by the canvas, whose scaling filter is the
// browser's choice and would not match PyTorch.

const LUMA = [0.299, 0.587, 0.114]; // torchvision's Grayscale weights (ITU-R 601)

/** Zeroed arrays of the right type and length for each input spec ({ name, shape, dtype }), a dim named in a shape at its value in dims. */
export function allocateInputs(specs, dims = {}) {
  const inputs = {};
  for (const { name, shape, dtype } of specs) {
    const count = shape.reduce((a, b) => a * (typeof b === "string" ? dims[b] : b), 1);
    if (!Number.isInteger(count)) throw new Error(`kuma: allocateInputs: input "${name}" has shape [${shape}]; pass each dim's value, e.g. allocateInputs(inputs, { ${shape.find((b) => typeof b === "string")}: 16 })`);
    inputs[name] = dtype === "float32" ? new Float32Array(count) : new Int32Array(count);
  }
  return inputs;
}

/**
 * An image as the NCHW Float32Array of `spec.shape` ([1, C, H, W] or [C, H, W], C = 1 or 3).
 * source: an ImageData, a canvas (HTML or Offscreen), an HTMLImageElement, an HTMLVideoElement,
 * an ImageBitmap or a VideoFrame. options: mean and std (per channel, on the 0..1 scale; default
 * 0 and 1), channelOrder "rgb" (default) or "bgr", and out, an array to fill instead of a new one.
 */
export function imageToTensor(source, spec, { mean = [0, 0, 0], std = [1, 1, 1], channelOrder = "rgb", out } = {}) {
  const shape = spec.shape ?? spec;
  const [channels, height, width] = shape.slice(-3);
  if (shape.length < 3 || (shape.length === 4 && shape[0] !== 1) || shape.length > 4 || (channels !== 1 && channels !== 3)) {
    throw new Error(`kuma: imageToTensor needs a shape [1, C, H, W] or [C, H, W] with C = 1 or 3, got [${shape}]`);
  }
  const pixels = readPixels(source);
  const result = out ?? new Float32Array(channels * height * width);
  if (result.length !== channels * height * width) {
    throw new Error(`kuma: imageToTensor's out has ${result.length} values; shape [${shape}] needs ${channels * height * width}`);
  }
  const order = channelOrder === "bgr" ? [2, 1, 0] : [0, 1, 2];
  const rows = axis(pixels.height, height);
  const cols = axis(pixels.width, width);
  const { data } = pixels;
  const at = (y, x, c) => data[(y * pixels.width + x) * 4 + c];
  for (let c = 0; c < channels; c++) {
    const weights = channels === 1 ? LUMA : [0, 1, 2].map((k) => (k === order[c] ? 1 : 0));
    const scale = 1 / (255 * std[c]);
    const shift = mean[c] / std[c];
    for (let y = 0; y < height; y++) {
      const [y0, y1, wy] = rows[y];
      for (let x = 0; x < width; x++) {
        const [x0, x1, wx] = cols[x];
        let value = 0;
        for (let k = 0; k < 3; k++) {
          if (!weights[k]) continue;
          const top = at(y0, x0, k) + (at(y0, x1, k) - at(y0, x0, k)) * wx;
          const bottom = at(y1, x0, k) + (at(y1, x1, k) - at(y1, x0, k)) * wx;
          value += weights[k] * (top + (bottom - top) * wy);
        }
        result[(c * height + y) * width + x] = value * scale - shift;
      }
    }
  }
  return result;
}

// for each output index along one axis: the two source indices and the weight of the second,
// with half-pixel centres, as PyTorch's bilinear (align_corners=False) computes them
function axis(from, to) {
  const ratio = from / to;
  return Array.from({ length: to }, (_, i) => {
    const at = Math.max(0, (i + 0.5) * ratio - 0.5);
    const low = Math.min(Math.floor(at), from - 1);
    return [low, Math.min(low + 1, from - 1), at - low];
  });
}

function readPixels(source) {
  if (typeof ImageData !== "undefined" && source instanceof ImageData) return source;
  const width = source.naturalWidth || source.videoWidth || source.displayWidth || source.width;
  const height = source.naturalHeight || source.videoHeight || source.displayHeight || source.height;
  if (!width || !height) throw new Error("kuma: imageToTensor got an image with no pixels yet (wait for its load event, or the video's first frame)");
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0);
  return context.getImageData(0, 0, width, height);
}
