// Types of `kuma-build/input` (src/input.js).

/** A tensor spec as a model's `inputs` lists it. */
export interface InputSpec {
  readonly name: string;
  readonly shape: readonly (number | string)[];
  readonly dtype: "float32" | "int32" | "int64";
}

/** Zeroed arrays of the right type and length for each input spec, keyed by name; dims gives the value of each dim a shape names (e.g. { seq: 16 }). */
export function allocateInputs<const S extends readonly InputSpec[]>(
  specs: S,
  dims?: { readonly [dim: string]: number },
): { [K in S[number] as K["name"]]: K["dtype"] extends "float32" ? Float32Array : Int32Array };

export type ImageSource = ImageData | HTMLCanvasElement | OffscreenCanvas | HTMLImageElement | HTMLVideoElement | ImageBitmap | VideoFrame;

export interface ImageToTensorOptions {
  /** per-channel mean on the 0..1 scale, e.g. ImageNet's [0.485, 0.456, 0.406] (default 0) */
  mean?: readonly number[];
  /** per-channel standard deviation on the 0..1 scale, e.g. [0.229, 0.224, 0.225] (default 1) */
  std?: readonly number[];
  /** the order of the 3 channels in the tensor (default "rgb") */
  channelOrder?: "rgb" | "bgr";
  /** an array to fill instead of a new one */
  out?: Float32Array;
}

/**
 * An image as an NCHW Float32Array: pixels / 255, resized bilinearly to the spec's H x W
 * (as PyTorch's F.interpolate(mode="bilinear", align_corners=False, antialias=False)), then
 * (x - mean) / std. spec: an input spec, or its shape ([1, C, H, W] or [C, H, W], C = 1 or 3).
 */
export function imageToTensor(source: ImageSource, spec: { readonly shape: readonly (number | string)[] } | readonly number[], options?: ImageToTensorOptions): Float32Array;
