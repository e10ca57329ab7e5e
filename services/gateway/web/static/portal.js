// A little progressive enhancement: choosing a country shows its choices at once (the button does
// the same without JavaScript).
document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
