// Types for `kuma:NAME` imports. Add "kuma-build/client" to compilerOptions.types
// (or `/// <reference types="kuma-build/client" />`); each model's exact input and
// output names and shapes are in its generated index.d.ts.
declare module "kuma:*" {
  export interface LoadOptions {
    /** reuse this device instead of requesting one */
    device?: GPUDevice;
    /** called as weight bytes arrive */
    onProgress?: (loaded: number, total: number) => void;
    /** fetch implementation for the weight chunks (default: globalThis.fetch) */
    fetch?: typeof fetch;
    /** false: skip the warm-up run on zeroed inputs at load */
    warmup?: boolean;
    /** false: neither read nor store the weight chunks in the browser's Cache API (default: on where `caches` exists) */
    cache?: boolean;
    /** aborts the load; load() then rejects with the signal's reason */
    signal?: AbortSignal;
    /** ms without a byte before a chunk download is retried (default 30000) */
    timeout?: number;
  }
  export interface TensorInfo {
    name: string;
    shape: readonly number[];
    dtype: "float32" | "int32";
  }
  export interface Model {
    /** an input may be a GPUBuffer (COPY_SRC); options.read: the outputs to read back (default all) */
    run(inputs: Record<string, Float32Array | Int32Array | GPUBuffer>, options?: { read?: readonly string[] }): Promise<Record<string, Float32Array | Int32Array>>;
    /** the GPUBuffer holding this output of the latest run (the model's own: the next run overwrites it) */
    outputBuffer(name: string): GPUBuffer;
    /** sets the state buffers (e.g. a KV cache) back to their initial values, after the runs already called */
    reset(): Promise<void>;
    dispose(): void;
    readonly device: GPUDevice;
    /** resolves when the device is lost or destroyed; load() again to recover */
    readonly lost: Promise<GPUDeviceLostInfo>;
    readonly inputs: readonly TensorInfo[];
    readonly outputs: readonly TensorInfo[];
  }
  /** Compile the kernels, stream the weights and return a runnable model. */
  export function load(options?: LoadOptions): Promise<Model>;
  export const inputs: readonly TensorInfo[];
  export const outputs: readonly TensorInfo[];
}
