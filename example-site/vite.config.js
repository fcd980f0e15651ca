// The kuma plugin compiles the models in kuma.toml and serves them as `kuma:<model>` modules:
// `vite build` builds them once, `vite` (dev) rebuilds on every save and reloads the page.
import kuma from "kuma-build/vite";

export default {
  base: "./", // relative URLs: dist/ works from any folder of any static server
  plugins: [kuma()],
};
