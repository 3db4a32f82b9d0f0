/**
 * `bty-tftp`: the read-only TFTP server on its own (bty-web can run the same server in-process,
 * see `[tftp]` in src/web/config.ts).
 *
 *   bty-tftp --root DIR [--port N] [--address ADDR] [--max-transfers N] [--workers N]
 */
import { parseArgs } from 'node:util';
import { EXIT, isBtyError, type ExitCode } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { startTftpServer } from './server.ts';

const USAGE = `usage: bty-tftp --root DIR [--port N] [--address ADDR] [--max-transfers N] [--workers N]
       bty-tftp --version

Serves the files under DIR, read-only, over TFTP (RFC 1350 with the blksize, tsize, timeout and
windowsize options).

--root DIR           folder served; nothing outside it is readable
--port N             UDP port (default 69 when running as root; required otherwise)
--address ADDR       listen address (default 0.0.0.0; an IPv6 address listens on IPv6)
--max-transfers N    transfers in flight at once (default 2000)
--workers N          extra threads running transfers (default: CPUs - 1; 0: the main thread only)
--quiet              no log line per transfer
`;

export interface TftpIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

const processIO: TftpIO = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

/** Runs bty-tftp; resolves with the exit code once the server has stopped (or failed to start). */
export async function main(
  argv: string[],
  io: TftpIO = processIO,
  signals: { onStop?: (stop: () => void) => void; isRoot?: boolean } = {},
): Promise<ExitCode> {
  let values: {
    root?: string;
    port?: string;
    address?: string;
    'max-transfers'?: string;
    workers?: string;
    quiet?: boolean;
    version?: boolean;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        root: { type: 'string' },
        port: { type: 'string' },
        address: { type: 'string' },
        'max-transfers': { type: 'string' },
        workers: { type: 'string' },
        quiet: { type: 'boolean' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.err(`bty-tftp: ${(err as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  if (values.help) {
    io.out(USAGE);
    return EXIT.ok;
  }
  if (values.version) {
    io.out(`bty-tftp ${VERSION}\n`);
    return EXIT.ok;
  }
  if (values.root === undefined || values.root === '') {
    io.err(`bty-tftp: --root DIR is required\n${USAGE}`);
    return EXIT.usage;
  }
  const isRoot = signals.isRoot ?? process.getuid?.() === 0;
  let port: number;
  if (values.port === undefined) {
    if (!isRoot) {
      io.err(
        'bty-tftp: port 69 needs root; run as root or give --port N (e.g. --port 6969)\n' + USAGE,
      );
      return EXIT.usage;
    }
    port = 69;
  } else {
    port = Number(values.port);
    if (!/^\d+$/.test(values.port) || port > 65535) {
      io.err(`bty-tftp: --port must be a number from 0 to 65535, not "${values.port}"\n`);
      return EXIT.usage;
    }
  }
  let maxTransfers: number | undefined;
  if (values['max-transfers'] !== undefined) {
    maxTransfers = Number(values['max-transfers']);
    if (!/^\d+$/.test(values['max-transfers']) || maxTransfers < 1) {
      io.err(`bty-tftp: --max-transfers must be a positive number\n`);
      return EXIT.usage;
    }
  }
  let workers: number | undefined;
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!/^\d+$/.test(values.workers) || workers > 256) {
      io.err(`bty-tftp: --workers must be a number from 0 to 256, not "${values.workers}"\n`);
      return EXIT.usage;
    }
  }
  const address = values.address ?? '0.0.0.0';
  try {
    const server = await startTftpServer({
      root: values.root,
      host: address,
      port,
      ...(maxTransfers !== undefined ? { maxTransfers } : {}),
      ...(workers !== undefined ? { workers } : {}),
      ...(values.quiet ? {} : { log: (line: string) => io.err(`${line}\n`) }),
    });
    const where = server.address();
    const shown = where.address.includes(':') ? `[${where.address}]` : where.address;
    io.err(`bty-tftp ${VERSION} listening on ${shown}:${where.port} (root ${values.root})\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      if (signals.onStop) signals.onStop(stop);
      else {
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      }
    });
    io.err('bty-tftp: stopping\n');
    await server.close();
    return EXIT.ok;
  } catch (err) {
    if (isBtyError(err)) {
      io.err(`bty-tftp: ${err.code}: ${err.message}\n`);
      if (err.hint) io.err(`hint: ${err.hint}\n`);
      return err.exitCode;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      io.err(`bty-tftp: cannot listen on ${address}:${port}: ${(err as Error).message}\n`);
      return EXIT.failure;
    }
    throw err;
  }
}
