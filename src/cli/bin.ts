/** Process entry point of `bty` (bin/bty runs the compiled form of this file). */
import module from 'node:module';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `bty: needs Node.js 22.12 or newer, this is ${process.version}; ` +
      "run 'make build' in the bty checkout to install Node 24 into .tools/\n",
  );
  process.exit(1);
}
// Cache compiled code between runs: bty is started often (scripts, the agent) and briefly.
module.enableCompileCache?.();

const { main } = await import('./main.ts');
const { EXIT } = await import('../core/errors.ts');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `bty: internal error: ${err instanceof Error ? err.stack : String(err)}\n`,
    );
    process.exitCode = EXIT.failure;
  },
);
