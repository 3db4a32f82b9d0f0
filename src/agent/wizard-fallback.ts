/**
 * The hand-over from the agent to the interactive wizard: the plan asks for it (`interactive`,
 * an unknown mode) or the plan could not be had (network or parse failure), or another agent
 * holds the lock. This is the one place the agent starts the wizard (src/tui/run.tsx), with the
 * server's catalog. When the agent hands over its server, every flash the wizard attempts is
 * reported to `POST /pxe/{mac}/status` as an auto-flash's is, so bty-web does not keep showing
 * the machine as waiting (or flash it again after a `done` it never heard of).
 */
import { EXIT, type ExitCode } from '../core/errors.ts';
import { terminalAttached } from '../tui/terminal.ts';
import type { ServerApi } from './server-api.ts';
import { sendStatus } from './status.ts';

export interface WizardFallbackRequest {
  /** The catalog the wizard opens with: the plan's, else `<server>/catalog.toml`. */
  catalog: string;
  /** Why the agent is handing over, shown above the wizard; null when the plan asked for it. */
  banner: string | null;
  out: (text: string) => void;
  /** The agent runs with `--no-reboot`: the wizard's reboot key must not reboot either. */
  noReboot?: boolean;
  /**
   * Where the wizard's flash outcomes are reported (the agent's server and MAC); absent: not
   * reported (another agent owns this machine's status).
   */
  server?: { api: ServerApi; retryDelayMs?: number };
}

export type WizardFallback = (request: WizardFallbackRequest) => Promise<ExitCode>;

export type WizardOutcome = { ok: true } | { ok: false; reason: string };

/**
 * The wizard's outcome hook: posts `done` or `failed` (the reason cut to the server's 500
 * characters by sendStatus). Never throws: a lost report must not break the wizard.
 */
export function outcomeReporter(
  server: NonNullable<WizardFallbackRequest['server']>,
): (outcome: WizardOutcome) => Promise<void> {
  return async (outcome) => {
    // Silent: the wizard owns the screen, and a printed line would scribble over it.
    const quiet = () => undefined;
    const retry = server.retryDelayMs !== undefined ? { retryDelayMs: server.retryDelayMs } : {};
    if (outcome.ok) await sendStatus(server.api, 'done', undefined, { out: quiet, ...retry });
    else await sendStatus(server.api, 'failed', outcome.reason, { out: quiet, ...retry });
  };
}

export const runWizardFallback: WizardFallback = async ({
  catalog,
  banner,
  out,
  noReboot,
  server,
}) => {
  if (banner !== null) out(`bty: ${banner}\n`);
  out(`bty: handing over to the interactive wizard with the catalog ${catalog}\n`);
  // Without a terminal nobody can answer the wizard; waiting at it would hang a service.
  if (!terminalAttached()) {
    out('bty: no terminal for the interactive wizard; nothing was flashed\n');
    return EXIT.failure;
  }
  const { runWizard } = await import('../tui/run.tsx');
  return runWizard({
    catalog,
    banner,
    noReboot: noReboot ?? false,
    ...(server ? { onOutcome: outcomeReporter(server) } : {}),
  });
};
