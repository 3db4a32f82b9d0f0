/** `bty`: the scriptable CLI. Each subcommand lives in its own file next to this one. */
import { Command, CommanderError } from 'commander';
import { EXIT, type ExitCode } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { processIO, type CliIO } from './output.ts';
import type { Register } from './command.ts';
import { registerDisks } from './disks.ts';
import { registerInspect } from './inspect.ts';
import { registerCatalog } from './catalog.ts';
import { registerFlash } from './flash.ts';
import { registerAgent } from '../agent/cli.ts';
// Plugs oras:// into image sources and catalog loading.
import '../oras/index.ts';

const EXIT_CODES_HELP = `
Without a subcommand, on a terminal, bty starts the interactive wizard (docs/wizard.md).

Exit codes:
  0    success
  1    operational failure (network, I/O, a helper program failed)
  2    usage error or bad input (unknown format, bad catalog, missing file)
  3    refused for safety (read-only, mounted or system disk, too small, not confirmed)
  4    integrity failure (sha256 mismatch, corrupt image data, read-back mismatch)
  130  cancelled (Ctrl-C); a flash interrupted while writing leaves partial data

Environment:
  BTY_IMAGE_ROOT           local image folder (default /var/lib/bty/images)
  BTY_TMPDIR               where a qcow2 downloaded from a URL is staged
  BTY_REGISTER_UEFI_BOOT   1/true/yes/on: add a one-shot UEFI boot entry after a flash
  BTY_ORAS_USERNAME        with BTY_ORAS_PASSWORD: the login for oras:// registries
                           (else ~/.docker/config.json auths)
  BTY_ORAS_REGISTRY        host:port,... the registries that login is for (default: all)
  BTY_ORAS_INSECURE        host:port,... registries to reach over plain HTTP
                           (localhost and 127.0.0.0/8 always are)
  BTY_AGENT_CONSOLE        agent: where console markers are echoed besides stdout
                           (default /dev/console; empty: nowhere)
  BTY_AGENT_LOOP_IDENTITY  1: the agent and the wizard may flash loop devices
                           (tests; docs/agent.md, docs/wizard.md)
`;

const COMMANDS: Register[] = [registerDisks, registerInspect, registerCatalog, registerFlash];

export async function main(argv: string[], io: CliIO = processIO): Promise<ExitCode> {
  let exitCode: ExitCode = EXIT.ok;
  const setExit = (code: ExitCode) => {
    exitCode = code;
  };
  const program = new Command('bty')
    .description('Put pre-built operating-system images onto disks: streamed, sparse, verified.')
    .version(`bty ${VERSION}`, '--version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .addHelpText('after', EXIT_CODES_HELP)
    .showHelpAfterError('(run `bty --help` for usage)')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();
  for (const register of COMMANDS) register(program, io, setExit);
  // Last: subcommands copy the root's settings when created, and must not get the agent's.
  registerAgent()(program, io, setExit);
  program.commands.forEach((c) =>
    c.exitOverride().configureOutput({ writeOut: io.out, writeErr: io.err }),
  );

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return EXIT.ok;
      }
      return EXIT.usage;
    }
    throw err;
  }
  return exitCode;
}
