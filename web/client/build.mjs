// Builds the browser client into ../voicefleet_web/static/ (served by the gateway at /).
// One bundle, no CDN: livekit-client is inlined by esbuild.
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'voicefleet_web', 'static');
const check = process.argv.includes('--check');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  minify: !check,
  sourcemap: true,
  outfile: join(out, 'app.js'),
  metafile: true,
  logLevel: 'info',
});
for (const file of ['index.html', 'style.css']) {
  await copyFile(join(here, 'src', file), join(out, file));
}
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`voicefleet client built into ${out} (${Math.round(bytes / 1024)} KiB)`);
