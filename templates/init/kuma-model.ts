// Written by `kuma init`: a first call of the model in kuma.toml. Import runModel where your
// app needs the model (docs/first-model.md); the kuma plugin of your bundler builds it.
import { inputs, load } from "kuma:model";
import type { Model } from "kuma:model";
import { allocateInputs } from "kuma-build/input";

let model: Promise<Model> | undefined;

/** Loads the model on first use (logging the weight download), then runs it on `feed` (default: zeros). */
export async function runModel(feed = allocateInputs(inputs)) {
  model ??= load({ onProgress: (loaded, total) => console.log(`kuma: ${loaded} of ${total} weight bytes`) });
  return (await model).run(feed);
}
