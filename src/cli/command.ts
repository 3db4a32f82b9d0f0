/** The small contract every subcommand file follows. */
import { Option, type Command } from 'commander';
import { IMAGE_FORMATS } from '../core/formats.ts';
import type { ExitCode } from '../core/errors.ts';
import { reportError, type CliIO } from './output.ts';

export type Register = (program: Command, io: CliIO, setExit: (code: ExitCode) => void) => void;

/**
 * Wraps a subcommand action: whatever it throws is reported (as text or JSON) and turned into
 * the documented exit code, so no command ever ends in a stack trace.
 */
export function action<A extends unknown[]>(
  io: CliIO,
  setExit: (code: ExitCode) => void,
  json: (args: A) => boolean,
  run: (...args: A) => Promise<ExitCode>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      setExit(await run(...args));
    } catch (err) {
      setExit(reportError(io, err, json(args)));
    }
  };
}

/** `--format FMT`: overrides the format an image's name implies (flash, inspect). */
export function formatOption(): Option {
  return new Option('--format <fmt>', 'override the format the name implies').choices([
    ...IMAGE_FORMATS,
  ]);
}
