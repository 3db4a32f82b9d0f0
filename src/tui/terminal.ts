/** Whether the wizard can run here. Kept apart from the screens so checking it loads no Ink. */

/** The wizard needs a person at a terminal: keys in and screens out. */
export function terminalAttached(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY);
}
