import type { Register } from './command.ts';

export const registerDisks: Register = () => {};
