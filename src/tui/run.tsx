/** @jsxImportSource react */
/**
 * Starts the wizard on the terminal: `bty`, `bty --catalog SOURCE`, and the agent's hand-over.
 * Loaded lazily by the CLI, so scripted subcommands never pay for Ink and React.
 */
import { render } from 'ink';
import { EXIT, type ExitCode } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { imageRoot, listLocalImages } from '../flash/images.ts';
import { ASCII_GLYPHS, UNICODE_GLYPHS, WizardApp, wantsAscii } from './app.tsx';
import { WizardController, type WizardOutcome } from './controller.ts';
import { realServices, type WizardServices } from './services.ts';
import { start } from './state.ts';

export type { WizardOutcome } from './controller.ts';

const ENTER_ALTERNATE_SCREEN = '\x1b[?1049h';
const LEAVE_ALTERNATE_SCREEN = '\x1b[?1049l';
const CURSOR_HOME = '\x1b[H';

export interface RunWizardOptions {
  /** `--catalog`, or the server's catalog; null: ask on the source screen (unless images exist). */
  catalog: string | null;
  /** Shown above the screens: why the agent handed over. */
  banner?: string | null;
  services?: WizardServices;
  env?: NodeJS.ProcessEnv;
  /** `--no-reboot` reached the wizard through the agent: the reboot key only says so. */
  noReboot?: boolean;
  /**
   * Told how each flash the wizard attempts ends (a cancel is `cancelled by the operator`), and
   * awaited before the result screen shows, for at most about 10 s: the agent reports it to its
   * server. Its failures are ignored; the wizard goes on either way.
   */
  onOutcome?: (outcome: WizardOutcome) => Promise<void>;
  /** Tests: how long a slow `onOutcome` may hold the result screen back. */
  outcomeTimeoutMs?: number;
}

/** Runs until the operator quits (or reboots); resolves with the exit code. */
export async function runWizard(options: RunWizardOptions): Promise<ExitCode> {
  const env = options.env ?? process.env;
  const root = imageRoot(env);
  const localImagesExist = (await listLocalImages(root)).length > 0;
  const services = options.services ?? realServices(env, { noReboot: options.noReboot ?? false });
  let quit: () => void = () => {};
  const quitting = new Promise<void>((resolve) => (quit = resolve));
  const controller = new WizardController(
    services,
    start({
      catalog: options.catalog,
      localImagesExist,
      banner: options.banner ?? null,
      noReboot: options.noReboot ?? false,
    }),
    () => quit(),
    { onOutcome: options.onOutcome, outcomeTimeoutMs: options.outcomeTimeoutMs },
  );
  let exitCode: ExitCode = EXIT.ok;
  // Ctrl-C arrives as a key in raw mode; a SIGINT from elsewhere (kill -INT) is treated the same:
  // it asks before cancelling a flash instead of leaving a half-written disk behind silently.
  const onInterrupt = () => controller.dispatch({ type: 'key', key: { name: 'ctrl-c' } });
  // SIGTERM is the system shutting down: there is nobody to ask, so a flash is cancelled at once
  // and the wizard leaves (130) only once the engine has stopped writing.
  const onTerminate = () => {
    exitCode = EXIT.cancelled;
    controller.abortFlash();
    void controller.settled().then(() => quit());
  };
  // The wizard owns both signals while it runs: the agent's own handlers (they exit unless its
  // flash runs) would otherwise end the process under a wizard flash. Restored afterwards.
  const owned: Array<[NodeJS.Signals, () => void]> = [
    ['SIGINT', onInterrupt],
    ['SIGTERM', onTerminate],
  ];
  const previous = owned.map(([signal, handler]) => {
    const listeners = process.listeners(signal);
    process.removeAllListeners(signal);
    process.on(signal, handler);
    return { signal, handler, listeners };
  });
  // The alternate screen keeps the shell's scrollback clean (the outcome is printed after). Entered
  // here rather than by Ink so the cursor is homed too: the agent may have printed lines first.
  process.stdout.write(`${ENTER_ALTERNATE_SCREEN}${CURSOR_HOME}`);
  const app = render(
    <WizardApp
      controller={controller}
      header={{ version: VERSION, imageRoot: root }}
      glyphs={wantsAscii(env) ? ASCII_GLYPHS : UNICODE_GLYPHS}
    />,
    {
      exitOnCtrlC: false,
      patchConsole: true,
      // The wizard only starts on a terminal: draw it even when CI=true is in the environment
      // (Ink would otherwise print only the last frame, at exit, and the screen stays blank).
      interactive: true,
    },
  );
  try {
    await quitting;
  } finally {
    for (const { signal, handler, listeners } of previous) {
      process.off(signal, handler);
      for (const listener of listeners) process.on(signal, listener);
    }
    app.unmount();
    await app.waitUntilExit().catch(() => {});
    process.stdout.write(LEAVE_ALTERNATE_SCREEN);
  }
  const { outcome, image } = controller.getState();
  if (outcome?.ok) {
    const checks = [
      outcome.sha256Verified ? 'sha256 verified' : 'sha256 not checked',
      outcome.readBackVerified ? 'read back' : null,
    ].filter(Boolean);
    process.stdout.write(
      `bty: flashed ${image?.name ?? ''} -> ${outcome.target} (${checks.join(', ')})\n`,
    );
  } else if (outcome) {
    process.stdout.write(
      `bty: flash ${outcome.cancelled ? 'cancelled' : 'failed'}: ${outcome.message}\n`,
    );
  }
  // Quitting is the operator's choice, even after a failed flash (upstream: exit 0); SIGTERM is
  // not, and says so.
  return exitCode;
}
