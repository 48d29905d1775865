// Measures the SDK as an app would ship it: bundled, minified, gzipped (the bound: 30 KiB).
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
const out = await build({ entryPoints: [entry], bundle: true, minify: true, format: "esm", platform: "browser", write: false });
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
const kib = (n) => (n / 1024).toFixed(1);
console.log(`bundle ${kib(code.length)} KiB minified, ${kib(gz)} KiB gzipped (limit 30 KiB)`);
if (gz > 30 * 1024) {
  console.error("over the 30 KiB limit");
  process.exit(1);
}
