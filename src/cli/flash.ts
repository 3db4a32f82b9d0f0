import type { Register } from './command.ts';

export const registerFlash: Register = () => {};
