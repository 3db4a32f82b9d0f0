/**
 * The agent's place on the `bty` command line: root options `--server`, `--mac` and
 * `--no-reboot`. With a MAC (from `--mac` or /proc/cmdline's `bty.mac=`) and no subcommand,
 * `bty` runs the agent; without one, plain `bty` shows the help as before.
 */
import type { Command } from 'commander';
import { EXIT, type ExitCode } from '../core/errors.ts';
import { action, type Register } from '../cli/command.ts';
import { reportError } from '../cli/output.ts';
import { runAgent } from './agent.ts';
import {
  consolePathFromEnv,
  emitMarker,
  kmsgPathFromEnv,
  markerExiting,
  type MarkerSinks,
} from './console.ts';
import { loopIdentityEnabled } from './disks.ts';
import { DEFAULT_LOCK_PATH } from './lock.ts';
import { rebootMachine } from './reboot.ts';
import { terminalAttached } from '../tui/terminal.ts';
import { DEFAULT_CMDLINE_PATH, resolveAgentSettings, type AgentSettings } from './settings.ts';

interface AgentFlags {
  server?: string;
  mac?: string;
  catalog?: string;
  /** false with `--no-reboot`. */
  reboot: boolean;
}

/** What tests replace: the host's lock, console and kernel log, the retry waits, the wizard. */
export interface AgentCliOverrides {
  lockPath?: string;
  consolePath?: string | null;
  kmsgPath?: string | null;
  planRetryDelaysMs?: readonly number[];
  runWizard?: (options: { catalog: string | null; noReboot: boolean }) => Promise<ExitCode>;
}

export function registerAgent(
  cmdlinePath = DEFAULT_CMDLINE_PATH,
  startWizard: () => boolean = terminalAttached,
  overrides: AgentCliOverrides = {},
): Register {
  return (program, io, setExit) => {
    const agent = action(
      io,
      setExit,
      () => false,
      async (settings: AgentSettings, reboot: boolean) => {
        const controller = new AbortController();
        let busy: 'flashing' | 'reporting' | null = null;
        const sinks: MarkerSinks = {
          consolePath:
            overrides.consolePath !== undefined ? overrides.consolePath : consolePathFromEnv(),
          kmsgPath: overrides.kmsgPath !== undefined ? overrides.kmsgPath : kmsgPathFromEnv(),
        };
        // A listener replaces Node's exit on SIGINT/SIGTERM: exit ourselves unless the agent
        // is busy. A running flash stops cleanly and reports `failed`; an outcome being posted
        // is let finish (bounded by its timeouts), since a lost `done` means a second flash. A
        // second signal while a flash is being cancelled exits at once.
        const onSignal = () => {
          if (busy === null || (busy === 'flashing' && controller.signal.aborted)) {
            // process.exit skips runAgent's finally: the exit marker is written here.
            emitMarker(markerExiting(), io.out, sinks);
            process.exit(EXIT.cancelled);
          }
          io.err(
            busy === 'flashing'
              ? 'bty: cancelling the flash...\n'
              : 'bty: telling the server how the flash ended, then exiting...\n',
          );
          controller.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        try {
          return await runAgent({
            ...settings,
            reboot: reboot ? () => rebootMachine((line) => io.out(`${line}\n`)) : null,
            out: io.out,
            err: io.err,
            isTTY: io.isTTY,
            ...sinks,
            lockPath: overrides.lockPath ?? DEFAULT_LOCK_PATH,
            ...(overrides.planRetryDelaysMs
              ? { planRetryDelaysMs: overrides.planRetryDelaysMs }
              : {}),
            loopIdentity: loopIdentityEnabled(),
            signal: controller.signal,
            onBusy: (state) => (busy = state),
          });
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      },
    );
    program
      .option(
        '--server <url>',
        'agent: bty-web base URL or bare host (default: bty.server= in /proc/cmdline, else bty-server)',
      )
      .option(
        '--mac <mac>',
        'agent: run server-driven for this MAC (default: bty.mac= in /proc/cmdline)',
      )
      .option('--no-reboot', 'agent: do not reboot when done (tests, hand runs)')
      .option(
        '--catalog <source>',
        'wizard: the catalog to offer (path, http(s)://, oras://); skips the source screen',
      )
      // Operands are checked below, so `bty bogus` still says "unknown command".
      .allowExcessArguments(true)
      // A root action drops commander's implicit `help` command: keep `bty help flash` working.
      .helpCommand(true)
      .action(async (flags: AgentFlags, command: Command) => {
        if (command.args.length > 0) {
          command.error(`error: unknown command '${command.args[0]}'`, {
            code: 'commander.unknownCommand',
          });
        }
        let settings: AgentSettings | null;
        try {
          settings = await resolveAgentSettings(flags, cmdlinePath);
        } catch (err) {
          setExit(reportError(io, err, false));
          return;
        }
        // No MAC anywhere: not the live environment. On a terminal that is the wizard; without
        // one (scripts, pipes) plain `bty` shows the help as before.
        if (settings === null) {
          if (!startWizard()) command.help({ error: true });
          const runWizard = overrides.runWizard ?? (await import('../tui/run.tsx')).runWizard;
          // `--no-reboot` holds for the wizard too: its reboot key only says so.
          setExit(await runWizard({ catalog: flags.catalog ?? null, noReboot: !flags.reboot }));
          return;
        }
        await agent(settings, flags.reboot);
      });
  };
}
