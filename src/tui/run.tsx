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
import { WizardController } from './controller.ts';
import { realServices, type WizardServices } from './services.ts';
import { start } from './state.ts';

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
    start({ catalog: options.catalog, localImagesExist, banner: options.banner ?? null }),
    () => quit(),
  );
  // Ctrl-C arrives as a key in raw mode; a SIGINT from elsewhere (kill -INT) is treated the same:
  // it asks before cancelling a flash instead of leaving a half-written disk behind silently.
  // The wizard owns SIGINT while it runs: the agent's own handler (it exits unless its flash
  // runs) would otherwise end the process under a wizard flash. Restored afterwards.
  const onSignal = () => controller.dispatch({ type: 'key', key: { name: 'ctrl-c' } });
  const previous = process.listeners('SIGINT');
  process.removeAllListeners('SIGINT');
  process.on('SIGINT', onSignal);
  // The alternate screen keeps the shell's scrollback clean (the outcome is printed after). Entered
  // here rather than by Ink so the cursor is homed too: the agent may have printed lines first.
  process.stdout.write(`${ENTER_ALTERNATE_SCREEN}${CURSOR_HOME}`);
  const app = render(
    <WizardApp
      controller={controller}
      header={{ version: VERSION, imageRoot: root }}
      glyphs={wantsAscii(env) ? ASCII_GLYPHS : UNICODE_GLYPHS}
    />,
    { exitOnCtrlC: false, patchConsole: true },
  );
  try {
    await quitting;
  } finally {
    process.off('SIGINT', onSignal);
    for (const listener of previous) process.on('SIGINT', listener);
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
  // Quitting is the operator's choice, even after a failed flash (upstream: exit 0).
  return EXIT.ok;
}
