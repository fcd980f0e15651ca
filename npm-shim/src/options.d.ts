// Options of both plugins.
export interface KumaOptions {
  /** path of kuma.toml, relative to the bundler's root (default: found upwards from the root) */
  config?: string;
  /** the Python that has kuma_build (default: KUMA_PYTHON, the active virtualenv, a .venv or venv in the root or above, a Poetry environment, python3) */
  python?: string;
}
