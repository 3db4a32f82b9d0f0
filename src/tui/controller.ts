/**
 * Runs the state machine: feeds it events, carries out the effects it asks for through the
 * services, and tells subscribers (the Ink screens) when the state changed. Outside React so the
 * screens stay plain functions of the state.
 */
import { asBtyError } from '../core/errors.ts';
import type { FlashChoice, WizardServices } from './services.ts';
import { step, type Effect, type Step, type WizardEvent, type WizardState } from './state.ts';

export class WizardController {
  private state: WizardState;
  private pending: Effect[];
  private readonly listeners = new Set<() => void>();
  private flashAbort: AbortController | null = null;
  private readonly services: WizardServices;
  private readonly onQuit: () => void;

  constructor(services: WizardServices, first: Step, onQuit: () => void) {
    this.services = services;
    this.state = first[0];
    this.pending = first[1];
    this.onQuit = onQuit;
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
        void s
          .flash(effect, (progress) => this.dispatch({ type: 'progress', progress }), abort.signal)
          .catch((err: unknown) => {
            const failure = asBtyError(err);
            return {
              ok: false as const,
              cancelled: false,
              message: failure.message,
              hint: failure.hint,
            };
          })
          .then((outcome) => {
            this.flashAbort = null;
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
