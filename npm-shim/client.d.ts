// generated from templates/runtime.d.ts by `python -m kuma_build.jsmodule client`; do not edit.
// The generic types of `kuma:NAME` imports, for models not built yet: add "kuma-build/client" to
// compilerOptions.types (or `/// <reference types="kuma-build/client" />`). kuma-env.d.ts, written
// by every build, declares each built model's `kuma:NAME` with its exact inputs and outputs.
declare module "kuma:*" {
  export interface Inputs {
    [name: string]: Float32Array | Int32Array;
  }

  export interface Outputs {
    [name: string]: Float32Array | Int32Array;
  }

  export const inputs: readonly TensorInfo[];
  export const outputs: readonly TensorInfo[];

  /**
   * A tensor the model reads or returns: the name, the shape, the dtype. A string in the shape is a
   * size that depends on the model's dims (kuma.toml): a dim's name ("seq") or a sum of products ("2*seq + 1").
   */
  export interface TensorInfo {
    readonly name: string;
    readonly shape: readonly (number | string)[];
    readonly dtype: "float32" | "int32" | "int64";
  }

  export interface LoadOptions {
    /** reuse this device instead of requesting one */
    device?: GPUDevice;
    /** called as weight bytes arrive */
    onProgress?: (loaded: number, total: number) => void;
    /** fetch implementation for the weight chunks (default: globalThis.fetch) */
    fetch?: typeof fetch;
    /** the warm-up run on zeroed inputs at load (default: true, except on a software adapter, whose first run is no slower) */
    warmup?: boolean;
    /** false: neither read nor store the weight chunks in the browser's Cache API (default: on where `caches` exists) */
    cache?: boolean;
    /** aborts the load; load() then rejects with the signal's reason */
    signal?: AbortSignal;
    /** ms without a byte before a chunk download is retried (default 30000) */
    timeout?: number;
    /** the kernels to run: "gpu" or "cpu" (default: "cpu" on a software or fallback adapter, else "gpu", among the classes the model was built for) */
    deviceClass?: DeviceClass;
  }

  /** Kernels tuned for a GPU, or for a software implementation of WebGPU (SwiftShader, lavapipe). */
  export type DeviceClass = "gpu" | "cpu";

  /** an input as a typed array, or as a GPUBuffer of the model's device (COPY_SRC usage) */
  export type RunInputs = { [K in keyof Inputs]: Inputs[K] | GPUBuffer };

  export interface Model {
    /** Runs the model once; calls are queued. A model with dims infers their values from the input lengths, and its outputs have the lengths of those values. */
    run(inputs: RunInputs): Promise<Outputs>;
    /** reads back only the outputs named in read; the others stay on the GPU (outputBuffer) */
    run<K extends keyof Outputs>(inputs: RunInputs, options: { read: readonly K[] }): Promise<Pick<Outputs, K>>;
    /** the GPUBuffer holding this output of the latest run (the model's own: the next run overwrites it) */
    outputBuffer(name: keyof Outputs): GPUBuffer;
    /** sets the state buffers (e.g. a KV cache) back to their initial values, after the runs already called */
    reset(): Promise<void>;
    /** Destroys the model's buffers (and its device, if load() created it), once the browser cache's stores that read them are done; run() rejects from now on. */
    dispose(): void;
    readonly device: GPUDevice;
    /** the device class whose kernels this model runs */
    readonly deviceClass: DeviceClass;
    /** resolves when the device is lost or destroyed; load() again to recover */
    readonly lost: Promise<GPUDeviceLostInfo>;
    /** resolves once the downloaded weight chunks are stored in the browser cache for the next load; the stores begin after load() resolves (at once with cache: false; never rejects) */
    readonly cached: Promise<void>;
    readonly inputs: typeof inputs;
    readonly outputs: typeof outputs;
  }

  /** Compile the kernels, stream the weights and return a runnable model. */
  export function load(options?: LoadOptions): Promise<Model>;
}
