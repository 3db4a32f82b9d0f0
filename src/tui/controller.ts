/**
 * Runs the state machine: feeds it events, carries out the effects it asks for through the
 * services, and tells subscribers (the Ink screens) when the state changed. Outside React so the
 * screens stay plain functions of the state.
 */
import { asBtyError } from '../core/errors.ts';
import type { FlashChoice, WizardServices } from './services.ts';
import {
  step,
  type Effect,
  type FlashOutcome,
  type Step,
  type WizardEvent,
  type WizardState,
} from './state.ts';

/** How a flash the wizard attempted ended, as the agent reports it to its server. */
export type WizardOutcome = { ok: true } | { ok: false; reason: string };

/** The reason a cancelled flash is reported with (whoever cancelled: key, SIGINT or SIGTERM). */
export const CANCELLED_REASON = 'cancelled by the operator';

/**
 * How long the result screen waits for `onOutcome`: a slow or unreachable server must not leave
 * the operator looking at a finished flash screen with no way on.
 */
export const OUTCOME_TIMEOUT_MS = 10_000;

export interface ControllerOptions {
  /** Told how each flash ended, before its result screen shows (bounded by OUTCOME_TIMEOUT_MS). */
  onOutcome?: (outcome: WizardOutcome) => Promise<void>;
  /** Tests shorten the wait. */
  outcomeTimeoutMs?: number;
}

export function wizardOutcome(outcome: FlashOutcome): WizardOutcome {
  if (outcome.ok) return { ok: true };
  return { ok: false, reason: outcome.cancelled ? CANCELLED_REASON : outcome.message };
}

export class WizardController {
  private state: WizardState;
  private pending: Effect[];
  private readonly listeners = new Set<() => void>();
  private flashAbort: AbortController | null = null;
  private readonly services: WizardServices;
  private readonly onQuit: () => void;
  private readonly options: ControllerOptions;
  /** Settles when the running flash has ended and been reported; null when none runs. */
  private flashDone: Promise<void> | null = null;

  constructor(
    services: WizardServices,
    first: Step,
    onQuit: () => void,
    options: ControllerOptions = {},
  ) {
    this.services = services;
    this.state = first[0];
    this.pending = first[1];
    this.onQuit = onQuit;
    this.options = options;
  }

  /** Runs the first state's effects (separate from the constructor so a screen can mount first). */
  begin(): void {
    const effects = this.pending;
    this.pending = [];
    for (const effect of effects) this.run(effect);
  }

  getState = (): WizardState => this.state;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  dispatch = (event: WizardEvent): void => {
    const [next, effects] = step(this.state, event);
    if (next !== this.state) {
      this.state = next;
      for (const listener of this.listeners) listener();
    }
    for (const effect of effects) this.run(effect);
  };

  /** A flash in progress, so the process can be told not to exit under it. */
  get flashing(): boolean {
    return this.flashAbort !== null;
  }

  /** Resolves once no flash runs (the engine stopped and the outcome was reported). */
  async settled(): Promise<void> {
    await this.flashDone;
  }

  /** Cancels a running flash without asking: SIGTERM, the system is shutting down. */
  abortFlash(): void {
    this.dispatch({ type: 'terminate' });
  }

  /** Hands the outcome to `onOutcome`, waiting at most the timeout; its failures are dropped. */
  private async report(outcome: FlashOutcome): Promise<void> {
    const onOutcome = this.options.onOutcome;
    if (!onOutcome) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.outcomeTimeoutMs ?? OUTCOME_TIMEOUT_MS);
    });
    try {
      await Promise.race([
        // Called inside the chain so a synchronous throw is caught like a rejection.
        Promise.resolve()
          .then(() => onOutcome(wizardOutcome(outcome)))
          .catch(() => {}),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private run(effect: Effect): void {
    const s = this.services;
    switch (effect.type) {
      case 'loadImages':
        s.loadImages(effect.catalog).then(
          ({ rows, error }) => this.dispatch({ type: 'imagesLoaded', rows, error }),
          (err: unknown) =>
            this.dispatch({ type: 'imagesLoaded', rows: [], error: asBtyError(err).message }),
        );
        return;
      case 'loadDisks':
        s.loadDisks().then(
          (disks) => this.dispatch({ type: 'disksLoaded', disks, error: null }),
          (err: unknown) =>
            this.dispatch({
              type: 'disksLoaded',
              disks: [],
              error: `cannot list disks: ${asBtyError(err).message}`,
            }),
        );
        return;
      case 'plan': {
        const choice: FlashChoice = effect;
        s.plan(choice).then(
          (plan) => this.dispatch({ type: 'planned', plan }),
          (err: unknown) =>
            this.dispatch({
              type: 'planFailed',
              disk: choice.disk.path,
              message: asBtyError(err).message,
            }),
        );
        return;
      }
      case 'flash': {
        const abort = new AbortController();
        this.flashAbort = abort;
        this.flashDone = s
          .flash(effect, (progress) => this.dispatch({ type: 'progress', progress }), abort.signal)
          .catch((err: unknown): FlashOutcome => {
            const failure = asBtyError(err);
            return {
              ok: false,
              cancelled: abort.signal.aborted,
              message: failure.message,
              hint: failure.hint,
            };
          })
          .then(async (outcome) => {
            this.flashAbort = null;
            await this.report(outcome);
            this.flashDone = null;
            this.dispatch({ type: 'flashed', outcome });
          });
        return;
      }
      case 'cancelFlash':
        this.flashAbort?.abort();
        return;
      case 'reboot':
        // A failed reboot is reported by rebootMachine itself; the wizard is done either way.
        void s
          .reboot(() => {})
          .catch(() => {})
          .finally(() => this.onQuit());
        return;
      case 'quit':
        this.onQuit();
        return;
    }
  }
}
