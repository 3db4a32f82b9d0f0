/** Process entry point of `bty-tftp` (bin/bty-tftp runs the compiled form of this file). */
import module from 'node:module';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(`bty-tftp: needs Node.js 22.12 or newer, this is ${process.version}\n`);
  process.exit(1);
}
module.enableCompileCache?.();

const { main } = await import('./main.ts');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `bty-tftp: internal error: ${err instanceof Error ? err.stack : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
