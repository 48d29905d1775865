// Builds the JavaScript SDK (clients/js) into its dist/, which the chat serves at /sdk/.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const sdk = fileURLToPath(new URL("../../../clients/js", import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
// Its compiler is a devDependency of its own; install it once, as its README says.
if (!existsSync(`${sdk}/node_modules/typescript`)) execFileSync(npm, ["ci", "--no-audit", "--no-fund"], { cwd: sdk, stdio: "inherit" });
execFileSync(npm, ["run", "--silent", "build"], { cwd: sdk, stdio: "inherit" });
