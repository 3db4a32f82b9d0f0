/** Process entry point of `bty` (bin/bty runs the compiled form of this file). */
import { EXIT } from '../core/errors.ts';
import { main } from './main.ts';

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
