import { defineConfig } from "vite";
import kuma from "kuma-build/vite";

// written by `kuma init`: the kuma plugin builds kuma.toml's models and resolves `kuma:NAME`;
// base "./" lets the built dist/ work from any folder of any static server
export default defineConfig({
  base: "./",
  plugins: [kuma()],
});
