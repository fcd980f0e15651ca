// The kuma plugin compiles the models in kuma.toml and serves them as `kuma:<model>` modules:
// `vite build` builds them once, `vite` (dev) rebuilds on every save and reloads the page.
// Two pages, each an HTML entry of the build: the digit classifier and the text generator.
import kuma from "kuma-build/vite";

export default {
  base: "./", // relative URLs: dist/ works from any folder of any static server
  plugins: [kuma()],
  build: {
    rolldownOptions: { input: ["index.html", "generate.html"] }, // Vite 8's name for rollupOptions
  },
};
