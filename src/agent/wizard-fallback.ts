/**
 * The hand-over from the agent to the interactive wizard: the plan asks for it (`interactive`,
 * an unknown mode) or the plan could not be had (network or parse failure). This is the one
 * place the agent starts the wizard (src/tui/run.tsx), with the server's catalog.
 */
import { EXIT, type ExitCode } from '../core/errors.ts';
import { terminalAttached } from '../tui/terminal.ts';

export interface WizardFallbackRequest {
  /** The catalog the wizard opens with: the plan's, else `<server>/catalog.toml`. */
  catalog: string;
  /** Why the agent is handing over, shown above the wizard; null when the plan asked for it. */
  banner: string | null;
  out: (text: string) => void;
  /** The agent runs with `--no-reboot`: the wizard's reboot key must not reboot either. */
  noReboot?: boolean;
}

export type WizardFallback = (request: WizardFallbackRequest) => Promise<ExitCode>;

export const runWizardFallback: WizardFallback = async ({ catalog, banner, out, noReboot }) => {
  if (banner !== null) out(`bty: ${banner}\n`);
  out(`bty: handing over to the interactive wizard with the catalog ${catalog}\n`);
  // Without a terminal nobody can answer the wizard; waiting at it would hang a service.
  if (!terminalAttached()) {
    out('bty: no terminal for the interactive wizard; nothing was flashed\n');
    return EXIT.failure;
  }
  const { runWizard } = await import('../tui/run.tsx');
  return runWizard({ catalog, banner, noReboot: noReboot ?? false });
};
