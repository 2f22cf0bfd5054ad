import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

export default {
  preprocess: vitePreprocess(),
  // Component styles go to an emitted .css file (the CSP has no 'unsafe-inline').
  compilerOptions: { css: 'external' },
};
