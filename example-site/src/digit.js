// Turns a drawing into the classifier's 1x1x28x28 input the way MNIST digits were made, and the
// way train/train_classifier.py (prepare) makes its training data, so drawings look like it:
// crop to the ink's bounding box, scale the longer side to 20 px by area averaging, then place
// the result so its centre of mass sits at the centre of the 28x28 image.

const SIZE = 28;
const BOX = 20;
const INK = 0.1; // coverage above which a pixel counts for the bounding box

/**
 * @param {Float32Array} ink  width * height coverage values in 0..1, row-major
 * @returns {Float32Array | null} 784 values (ink 1, paper 0), or null for a blank drawing
 */
export function prepareDigit(ink, width, height) {
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[y * width + x] <= INK) continue;
      top = Math.min(top, y), bottom = Math.max(bottom, y);
      left = Math.min(left, x), right = Math.max(right, x);
    }
  }
  if (bottom < 0) return null;

  const cropH = bottom - top + 1, cropW = right - left + 1;
  const scale = BOX / Math.max(cropH, cropW);
  const h = Math.max(1, Math.round(cropH * scale)), w = Math.max(1, Math.round(cropW * scale));
  // area averaging over the same windows as PyTorch's adaptive_avg_pool2d
  const small = new Float32Array(h * w);
  let mass = 0, massY = 0, massX = 0;
  for (let i = 0; i < h; i++) {
    const y0 = top + Math.floor((i * cropH) / h), y1 = top + Math.ceil(((i + 1) * cropH) / h);
    for (let j = 0; j < w; j++) {
      const x0 = left + Math.floor((j * cropW) / w), x1 = left + Math.ceil(((j + 1) * cropW) / w);
      let sum = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) sum += ink[y * width + x];
      const value = sum / ((y1 - y0) * (x1 - x0));
      small[i * w + j] = value;
      mass += value, massY += value * i, massX += value * j;
    }
  }

  const clamp = (value, high) => Math.min(Math.max(value, 0), high);
  const offsetY = clamp(Math.round((SIZE - 1) / 2 - massY / mass), SIZE - h);
  const offsetX = clamp(Math.round((SIZE - 1) / 2 - massX / mass), SIZE - w);
  const image = new Float32Array(SIZE * SIZE);
  for (let i = 0; i < h; i++) image.set(small.subarray(i * w, (i + 1) * w), (offsetY + i) * SIZE + offsetX);
  return image;
}
