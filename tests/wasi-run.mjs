// Runs a wasm32-wasip1 command module in Node's WASI (V8, the engine Envoy embeds), with one
// host directory mapped read-only-in-practice at /data. Exits with the module's exit code.
// Usage: node tests/wasi-run.mjs <module.wasm> <host-dir> [args passed after /data...]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [module, dir, ...rest] = process.argv.slice(2);
if (!module || !dir) {
  console.error('usage: node wasi-run.mjs <module.wasm> <host-dir> [args...]');
  process.exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: [module, '/data', ...rest],
  env: {},
  preopens: { '/data': dir },
  returnOnExit: true,
});
const compiled = await WebAssembly.compile(await readFile(module));
// A module that also links a filter imports the proxy-wasm host ABI (module "env"). Nothing
// on a command path may call it: every such import traps, so a call fails the run instead of
// passing silently. (jose-conformance links no filter and imports only WASI.)
const env = {};
for (const imp of WebAssembly.Module.imports(compiled)) {
  if (imp.module === 'env' && imp.kind === 'function') {
    env[imp.name] = () => {
      throw new Error(`unexpected host call ${imp.name}`);
    };
  }
}
const instance = await WebAssembly.instantiate(compiled, { ...wasi.getImportObject(), env });
// Start the command through its `_start` and memory only: a filter's reactor entry point
// (`_initialize`), if linked in, would make `wasi.start` refuse the instance.
const { _start, memory } = instance.exports;
process.exitCode = wasi.start({ exports: { _start, memory } });
