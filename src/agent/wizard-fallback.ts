/**
 * The hand-over from the agent to the interactive wizard: the plan asks for it (`interactive`,
 * an unknown mode) or the plan could not be had (network or parse failure). The wizard is not
 * built yet; this is the one place that will start it.
 */
import { EXIT, type ExitCode } from '../core/errors.ts';

export interface WizardFallbackRequest {
  /** The catalog the wizard opens with: the plan's, else `<server>/catalog.toml`. */
  catalog: string;
  /** Why the agent is handing over, shown above the wizard; null when the plan asked for it. */
  banner: string | null;
  out: (text: string) => void;
}

export type WizardFallback = (request: WizardFallbackRequest) => Promise<ExitCode>;

export const runWizardFallback: WizardFallback = ({ catalog, banner, out }) => {
  if (banner !== null) out(`bty: ${banner}\n`);
  out(`bty: handing over to the interactive wizard with the catalog ${catalog}\n`);
  out('bty: the interactive wizard is not built yet; nothing was flashed\n');
  return Promise.resolve(EXIT.failure);
};
