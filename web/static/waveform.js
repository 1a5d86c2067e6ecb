// The item page's waveform: selecting a point of the picture moves the player there. A mouse
// and touch convenience only: the player's own controls seek from the keyboard.
const image = document.getElementById("waveform");
const player = document.getElementById("player");
const hint = document.getElementById("waveform-hint");

if (image && player) {
  image.addEventListener("click", (event) => {
    const box = image.getBoundingClientRect();
    if (!Number.isFinite(player.duration) || box.width <= 0) {
      return;
    }
    const share = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    player.currentTime = share * player.duration;
  });
  image.classList.add("app-waveform__image--seekable");
  if (hint) {
    hint.hidden = false;
  }
}
