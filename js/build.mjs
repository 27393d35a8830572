// Builds the package: dist/durasync.mjs (one ES module, minified, for browsers and bundlers),
// dist/replay.mjs (the node CLI), dist/types/*.d.ts (tsc), and copies the bundle to
// ../src/durasync/static/ so that `durasync serve` serves it and the Python wheel ships it.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
await esbuild.build({
  entryPoints: [join(here, "src/index.ts")],
  outfile: join(dist, "durasync.mjs"),
  bundle: true,
  format: "esm",
  platform: "browser",
  mainFields: ["module", "main"],
  target: "es2022",
  minify: true,
  // error classes name themselves after their class (`err.name`): keep the names through minify
  keepNames: true,
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: [join(here, "src/replay.ts")],
  outfile: join(dist, "replay.mjs"),
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node18",
  banner: { js: "#!/usr/bin/env node" },
  logLevel: "warning",
});
execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "-p", join(here, "tsconfig.json"), "--emitDeclarationOnly"], {
  stdio: "inherit",
});
const staticDir = join(here, "../src/durasync/static");
mkdirSync(staticDir, { recursive: true });
for (const f of ["durasync.mjs", "durasync.mjs.map"]) copyFileSync(join(dist, f), join(staticDir, f));
